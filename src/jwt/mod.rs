//! End-user JWT verification.
//!
//! Providers come from the bundle's `jwt:` section and are compiled with it
//! ([`Providers`]). The server owns one [`JwtVerifier`], which outlives
//! bundle swaps: it keeps each provider's keys (fetched in the background for
//! a remote JWKS) and a cache of verified tokens, and reuses both for a new
//! bundle whose provider settings are unchanged.
//!
//! A token is checked in this order: one token in the request, size,
//! segments and base64url, a header without `alg: none`, `crit`, or keys of
//! the token's own choosing, the issuer's provider, a key that fits the
//! algorithm, the signature, then `exp`, `nbf`, `iat`, `iss` and `aud`.
//! Each failure has its own [`TokenError`].

pub mod cache;
pub mod error;
pub mod extract;
pub mod header;
pub mod jwks;
pub mod keys;
pub mod provider;
pub mod registry;
pub mod spec;
pub mod verify;

pub use error::TokenError;
pub use keys::KeyStatus;
pub use provider::Providers;
pub use registry::{Authentication, JwtVerifier};
pub use spec::JwtSpec;
