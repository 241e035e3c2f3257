//! Small helpers: CSPRNG strings, constant-time comparison, safe text for messages, the clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `n` bytes from the operating system's CSPRNG (aws-lc-rs), base64url without padding.
pub fn random_b64url(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // aws-lc-rs's `fill` only fails if the OS RNG is unusable; nothing safe can continue then.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// Constant-time equality of two strings (length may leak; content does not).
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Server-chosen text made safe for a terminal: control characters replaced, at most `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Query parameters whose values are secrets or one-time credentials.
const SECRET_PARAMS: &[&str] = &[
    "code",
    "state",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "client_secret",
    "client_assertion",
    "code_verifier",
];

/// A URL for an error message: secret-bearing query values replaced by `***`.
pub fn redact_url(u: &str) -> String {
    let Ok(mut url) = url::Url::parse(u) else {
        return printable(u, 200);
    };
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    printable(url.as_str(), 500)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_are_long_and_distinct() {
        let a = random_b64url(32);
        let b = random_b64url(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }

    #[test]
    fn redaction_hides_codes_but_keeps_the_rest() {
        let r = redact_url("https://x.example/cb?code=SECRET&state=S2&patient=p1");
        assert!(!r.contains("SECRET") && !r.contains("S2"), "{r}");
        assert!(r.contains("patient=p1"));
    }
}
