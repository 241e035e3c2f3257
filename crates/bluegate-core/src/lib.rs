//! Pure protocol logic for Bluegate.
//!
//! Nothing in this crate does I/O or reads the clock: time and randomness are passed in, so every protocol
//! decision can be unit-tested without a server. The server crate translates HTTP to these functions and back.

pub mod authorize;
pub mod certs;
pub mod discovery;
pub mod jose;
pub mod keys;
pub mod pki;
pub mod scopes;
pub mod secrets;
pub mod tokens;
pub mod trust;
pub mod udap;
