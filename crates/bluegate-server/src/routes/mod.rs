//! HTTP handlers. They parse, call core or the store, and map errors; they decide nothing themselves.

pub mod account;
pub mod authorize;
pub mod discovery;
pub mod health;
pub mod introspect;
pub mod register;
pub mod token;
