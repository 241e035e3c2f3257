//! One error type for the app side. Variants say what went wrong and quote what the server said
//! (`error_description`, OperationOutcome text) where it said something; none carries a token, a secret or
//! a key.

use crate::discovery::DiscoveryError;
use crate::http::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    HttpSetup(#[from] HttpError),
    /// The request did not complete (connection, TLS, timeout).
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// A response body larger than the configured limit; it was not read past the limit.
    #[error("{url}: the response is larger than the {limit}-byte limit; refused")]
    TooLarge { url: String, limit: u64 },
    /// The server answered something that is not what the protocol says (not JSON, a missing field...).
    #[error("{url}: {message}")]
    BadResponse { url: String, message: String },
    /// The server does not advertise what the operation needs.
    #[error("the server does not advertise {0}")]
    NotSupported(&'static str),
    /// The app's certificate or key cannot be used.
    #[error("app identity: {0}")]
    Identity(String),
    /// The registration endpoint refused (RFC 7591 §3.2.2).
    #[error("registration refused (HTTP {status}): {error}{}", describe(.description))]
    Registration {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The token endpoint refused (RFC 6749 §5.2).
    #[error("the token endpoint refused (HTTP {status}): {error}{}", describe(.description))]
    Token {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The authorization server sent the user back with an error (RFC 6749 §4.1.2.1).
    #[error("authorization failed: {error}{}", describe(.description))]
    Authorization {
        error: String,
        description: Option<String>,
    },
    /// The redirect carried no `state`, or not ours: possible CSRF or a mixed-up flow. Nothing was exchanged.
    #[error("the redirect's state does not match this authorization request; refused")]
    StateMismatch,
    /// The redirect carried neither `code` nor `error`.
    #[error("the redirect carries no authorization code")]
    MissingCode,
    /// The token response is not a usable Bearer token response.
    #[error("unusable token response: {0}")]
    TokenResponse(String),
    /// The `id_token` did not validate.
    #[error("the id_token is not valid: {0}")]
    IdToken(String),
    /// No refresh token is held (none was issued, or it was dropped after a failure).
    #[error("no refresh token is available; launch again")]
    NoRefreshToken,
    /// A FHIR request failed with an HTTP status; `outcome` is the OperationOutcome text if any.
    #[error("{url}: HTTP {status}{}", describe(.outcome))]
    Fhir {
        url: String,
        status: u16,
        outcome: Option<String>,
    },
    /// A Bundle link (or any URL) that leaves the FHIR base: the token is never sent there.
    #[error("refusing to follow `{url}`: it is not under the FHIR base {base}, and the access token is never sent elsewhere")]
    ForeignLink { url: String, base: String },
    /// Waiting for the redirect took too long.
    #[error("no redirect arrived within {0} seconds")]
    Timeout(u64),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
}

fn describe(d: &Option<String>) -> String {
    match d {
        Some(d) if !d.is_empty() => format!(": {}", crate::util::printable(d, 500)),
        _ => String::new(),
    }
}

impl Error {
    pub(crate) fn transport(url: &str, e: reqwest::Error) -> Self {
        // reqwest's messages carry the URL; ours already says it. Never the body.
        let mut message = e.to_string();
        if e.is_timeout() {
            message = "timed out".into();
        } else if let Some(src) = std::error::Error::source(&e) {
            message = format!("{message} ({src})");
        }
        Error::Transport {
            url: crate::util::redact_url(url),
            message,
        }
    }

    pub(crate) fn bad(url: &str, message: impl Into<String>) -> Self {
        Error::BadResponse {
            url: crate::util::redact_url(url),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
