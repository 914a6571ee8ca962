//! panvault: a card-tokenization vault.
//!
//! The library holds every rule; the binary (`src/main.rs`) and the HTTP edge only parse input,
//! call one operation and map its typed [`Error`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod audit;
pub mod cli;
pub mod crypto;
pub mod error;
pub mod evidence;
pub mod gateway;
pub mod harden;
pub mod hsm;
pub mod http;
pub mod keys;
pub mod mask;
pub mod pan;
pub mod sandbox;
pub mod seal;
pub mod secret;
pub mod store;
mod sync;
pub mod tls;
pub mod token;
pub mod vault;

pub use error::{Error, Result};
