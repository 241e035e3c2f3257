//! Bluegate's HTTP server: discovery documents, OAuth endpoints and the FHIR API on axum.
//!
//! Handlers are thin: they parse the request, call `bluegate-core` for decisions and `bluegate-store` for
//! state, and map errors to the wire in one place ([`error`]).

pub mod app;
pub mod audit;
pub mod client_auth;
pub mod clients;
pub mod communities;
pub mod config;
pub mod demo;
pub mod error;
pub mod fhir;
pub mod fhir_capabilities;
pub mod pages;
pub mod passwords;
pub mod random;
pub mod revocations;
pub mod routes;
pub mod serve;
pub mod session;
pub mod signin;
pub mod signing;
pub mod telemetry;
pub mod tls;
pub mod trust_runtime;
