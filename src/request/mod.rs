//! Request facts: what a decision reads from a CheckRequest.
//!
//! [`RequestFacts::from_check`] borrows from the CheckRequest where it can
//! and normalizes what rules match on: the method, the host and the path.

pub mod headers;
pub mod host;
pub mod path;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::decision::Reason;
pub use headers::Headers;
pub use path::{NormalizedPath, PathOptions};

/// Maximum length of an HTTP method name. No registered method comes close.
const MAX_METHOD_LENGTH: usize = 32;

/// The facts of one HTTP request, normalized.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// Envoy's `x-request-id`, empty when absent.
    pub id: &'a str,
    /// Upper-case method name such as `GET`.
    pub method: &'a str,
    /// Lower-case host without port or trailing dot; empty when absent.
    pub host: std::borrow::Cow<'a, str>,
    pub path: NormalizedPath,
    /// Raw query without `?`.
    pub query: &'a str,
    pub scheme: &'a str,
    pub headers: Headers<'a>,
    pub context_extensions: Option<&'a HashMap<String, String>>,
    /// `source.principal` as Envoy sent it; empty when absent.
    pub source_principal: &'a str,
    /// `source.certificate` as Envoy sent it (URL-encoded PEM); empty when absent.
    pub source_certificate: &'a str,
}

impl<'a> RequestFacts<'a> {
    /// Reads and normalizes the facts of a CheckRequest. Returns the reason
    /// for denying when the request lacks what a decision needs or is
    /// ambiguous.
    pub fn from_check(check: &'a CheckRequest, options: PathOptions) -> Result<Self, Reason> {
        let attributes = check
            .attributes
            .as_ref()
            .ok_or(Reason::MissingHttpAttributes)?;
        let http = attributes
            .request
            .as_ref()
            .and_then(|request| request.http.as_ref())
            .ok_or(Reason::MissingHttpAttributes)?;

        let method = validate_method(&http.method)?;
        let host = host::normalize(&http.host)?;
        let target = path::normalize(&http.path, options)?;
        let headers = Headers::from_http(http);
        let source = attributes.source.as_ref();

        Ok(RequestFacts {
            id: &http.id,
            method,
            host,
            path: target.path,
            query: target.query,
            scheme: &http.scheme,
            headers,
            context_extensions: Some(&attributes.context_extensions),
            source_principal: source.map_or("", |peer| peer.principal.as_str()),
            source_certificate: source.map_or("", |peer| peer.certificate.as_str()),
        })
    }
}

/// Accepts an HTTP method token. Envoy forwards methods as received, and
/// method matching is case-sensitive, as in HTTP itself, so `get` is not `GET`.
fn validate_method(method: &str) -> Result<&str, Reason> {
    let valid = !method.is_empty()
        && method.len() <= MAX_METHOD_LENGTH
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(method)
    } else {
        Err(Reason::InvalidMethod)
    }
}
