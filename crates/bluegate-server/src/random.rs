//! Random identifiers and secrets from the operating system's CSPRNG (via aws-lc-rs).

use base64::Engine;

/// `bytes` random bytes, base64url without padding (16 bytes = 128 bits). Never starts with `-`: these
/// values become client ids and other identifiers that people pass on command lines, where a leading `-`
/// reads as an option (redrawing costs under 0.02 bits of entropy).
pub fn token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    loop {
        // aws-lc-rs only fails here if the OS has no entropy source, which we cannot run without.
        if aws_lc_rs::rand::fill(&mut buf).is_err() {
            panic!("the operating system's random number generator failed");
        }
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf);
        if !t.starts_with('-') {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_have_the_length_and_never_a_leading_dash() {
        for _ in 0..2000 {
            let t = super::token(16);
            assert_eq!(t.len(), 22);
            assert!(!t.starts_with('-'));
        }
    }
}
