//! Property tests: arbitrary request bytes never panic normalization or
//! decision, and every path that fails to normalize is denied.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use authzd::engine::{self, RequestLimits, UserSource};
use authzd::policy::Bundle;
use authzd::request::PathOptions;
use authzd::request::path::normalize;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use proptest::prelude::*;

fn example() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        Bundle::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example")).unwrap()
    })
}

/// Characters that matter to path parsing, mixed with arbitrary ones.
fn path_strategy() -> impl Strategy<Value = String> {
    let interesting = prop::sample::select(vec![
        "/", "/", "/", ".", "..", "%", "%2f", "%2e", "%5c", "%00", "%25", "%zz", "%4", ";", "\\",
        "#", "?", "&", "=", "a", "admin", "internal", "tenants", "acme", "orders", "\u{0}", "\t",
        " ", "é", "%c3%a9", "%C3", "*", "{", "}",
    ]);
    let piece = prop_oneof![
        4 => interesting.prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn check_request(
    method: &str,
    host: &str,
    path: &str,
    principal: &str,
    headers: HashMap<String, String>,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: principal.to_owned(),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    host: host.to_owned(),
                    path: path.to_owned(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decision_never_panics_and_bad_paths_deny(
        method in prop_oneof![Just("GET".to_owned()), Just("POST".to_owned()), any::<String>()],
        host in prop_oneof![Just("shop.example.org".to_owned()), any::<String>()],
        path in path_strategy(),
        principal in prop_oneof![
            Just(String::new()),
            Just("spiffe://example.org/ns/payments/sa/ledger".to_owned()),
            any::<String>(),
        ],
        headers in prop::collection::hash_map(any::<String>(), any::<String>(), 0..6),
    ) {
        let request = check_request(&method, &host, &path, &principal, headers);
        let evaluation = engine::decide(
            example(),
            &request,
            &UserSource::Anonymous,
            RequestLimits::default(),
            None,
        );

        if normalize(&path, PathOptions::default()).is_err() {
            prop_assert!(!evaluation.decision.allowed, "path {path:?} failed to parse but was allowed");
        }
    }

    #[test]
    fn normalized_paths_have_no_dot_or_empty_segments(path in path_strategy()) {
        if let Ok(target) = normalize(&path, PathOptions::default()) {
            let segments: Vec<&str> = target.path.segments().collect();
            let last = segments.len() - 1;
            for (index, segment) in segments.iter().enumerate() {
                prop_assert!(*segment != "." && *segment != "..", "{path:?}");
                prop_assert!(!segment.contains('/'), "{path:?}");
                prop_assert!(index == last || !segment.is_empty(), "{path:?}");
            }
            prop_assert!(target.path.as_str().starts_with('/'));
        }
    }
}
