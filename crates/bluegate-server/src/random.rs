//! Random identifiers and secrets from the operating system's CSPRNG (via aws-lc-rs).

use base64::Engine;

/// `bytes` random bytes, base64url without padding (16 bytes = 128 bits).
pub fn token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // aws-lc-rs only fails here if the OS has no entropy source, which we cannot run without.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
