//! HTTP handlers. They parse, call core or the store, and map errors; they decide nothing themselves.

pub mod discovery;
pub mod health;
pub mod register;
