//! A bundle's own tests: each states a request and the decision expected.
//!
//! Test requests become real CheckRequests and go through the same
//! normalization and decision as traffic from Envoy; only the user's token
//! is replaced by claims stated in the test.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;

use super::compile::{Bundle, BundleTest};
use super::eval::TraceEntry;
use super::model::{ExpectedDecision, TestRequest};
use crate::decision::Decision;
use crate::engine::{self, RequestLimits, UserSource};
use crate::identity::User;

/// The result of one bundle test.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub file: Arc<str>,
    /// Empty when the test passed; otherwise one line per mismatch.
    pub failures: Vec<String>,
    pub decision: Decision,
    pub trace: Vec<TraceEntry>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every test of the bundle.
pub fn run_tests(bundle: &Bundle) -> Vec<TestResult> {
    bundle
        .tests
        .iter()
        .map(|test| run_test(bundle, test))
        .collect()
}

fn run_test(bundle: &Bundle, test: &BundleTest) -> TestResult {
    let spec = &test.spec;
    let mut failures = Vec::new();
    let mut trace = Vec::new();

    let decision = match build_check(&spec.request) {
        Ok((check, user)) => {
            engine::decide(
                bundle,
                &check,
                &user_source(user, bundle),
                RequestLimits::default(),
                Some(&mut trace),
            )
            .decision
        }
        Err(problem) => {
            failures.push(problem);
            Decision::deny(
                crate::decision::Reason::MissingHttpAttributes,
                bundle.revision.clone(),
            )
        }
    };

    if failures.is_empty() {
        let expected_allow = spec.expect.decision == ExpectedDecision::Allow;
        if decision.allowed != expected_allow {
            failures.push(format!(
                "expected {}, got {} ({}{})",
                if expected_allow { "allow" } else { "deny" },
                decision.decision_str(),
                decision.reason,
                decision
                    .rule
                    .as_deref()
                    .map(|r| format!(", rule `{r}`"))
                    .unwrap_or_default()
            ));
        }
        if let Some(expected_rule) = &spec.expect.rule
            && decision.rule.as_deref() != Some(expected_rule.as_str())
        {
            failures.push(format!(
                "expected rule `{expected_rule}`, got {}",
                decision
                    .rule
                    .as_deref()
                    .map(|r| format!("`{r}`"))
                    .unwrap_or_else(|| "no rule".to_owned())
            ));
        }
        if let Some(expected_reason) = &spec.expect.reason
            && decision.reason.as_str() != expected_reason
        {
            failures.push(format!(
                "expected reason `{expected_reason}`, got `{}`",
                decision.reason
            ));
        }
    }

    TestResult {
        name: spec.name.clone(),
        file: test.file.clone(),
        failures,
        decision,
        trace,
    }
}

/// Turns the claims a test states into the user the engine sees.
pub fn user_source(claims: Option<serde_json::Value>, bundle: &Bundle) -> UserSource {
    match claims {
        None => UserSource::Anonymous,
        Some(claims) => UserSource::Verified(Arc::new(User::from_claims(claims, &bundle.claims))),
    }
}

/// Builds the CheckRequest Envoy would send for a test request, and the
/// claims the test states for its user.
pub fn build_check(
    request: &TestRequest,
) -> Result<(CheckRequest, Option<serde_json::Value>), String> {
    let time = match &request.time {
        None => None,
        Some(text) => {
            let parsed = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("invalid `time` `{text}`: {e}; use RFC 3339"))?;
            Some(Timestamp {
                seconds: parsed.timestamp(),
                nanos: i32::try_from(parsed.timestamp_subsec_nanos()).unwrap_or(0),
            })
        }
    };
    if let Some(claims) = &request.claims
        && !claims.is_object()
    {
        return Err("`claims` must be a map of claim names to values".to_owned());
    }

    let mut headers: HashMap<String, String> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.insert(":method".to_owned(), request.method.clone());
    headers.insert(":path".to_owned(), request.path.clone());
    headers.insert(":authority".to_owned(), request.host.clone());

    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: request.principal.clone().unwrap_or_default(),
                ..Default::default()
            }),
            request: Some(Request {
                time,
                http: Some(HttpRequest {
                    id: "bundle-test".to_owned(),
                    method: request.method.clone(),
                    headers,
                    path: request.path.clone(),
                    host: request.host.clone(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    ..Default::default()
                }),
            }),
            context_extensions: request
                .context_extensions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        }),
    };
    Ok((check, request.claims.clone()))
}
