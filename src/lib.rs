//! authzd: an Envoy external-authorization server.
//!
//! Envoy calls `envoy.service.auth.v3.Authorization/Check` for each request;
//! authzd answers allow or deny from the caller's workload identity, the end
//! user's verified token, the normalized request and a compiled policy
//! bundle, and explains every decision.

pub mod admin_http;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod engine;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod request;
pub mod server;
pub mod spiffe;
pub mod store;
pub mod tls;
