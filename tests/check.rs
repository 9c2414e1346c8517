//! Check over real gRPC on 127.0.0.1 against the example bundle and small
//! bundles written by the tests.

mod common;

use std::path::Path;

use common::{Check, TestServer, check, write_bundle};

const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";
const LEDGER: &str = "spiffe://example.org/ns/payments/sa/ledger";

async fn example_server() -> TestServer {
    TestServer::start(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies/example")
            .as_path(),
    )
    .await
}

#[tokio::test]
async fn example_allows_public_health() {
    let server = example_server().await;
    let mut client = server.client().await;

    let answer = check(
        &mut client,
        &Check::new("GET", "shop.example.org", "/healthz"),
    )
    .await;

    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.grpc_code, 0);
    assert_eq!(answer.rule, "health");
    assert_eq!(answer.reason, "allowed_by_rule");
    assert_eq!(answer.revision, "2026-12-04.1");
    assert_eq!(answer.decision_id.len(), 32);
}

#[tokio::test]
async fn allow_sets_identity_headers_and_strips_spoofed_ones() {
    let server = example_server().await;
    let mut client = server.client().await;

    let request = Check::new("PUT", "ledger.internal", "/internal/balances/acme")
        .principal(LEDGER)
        .header("x-authz-subject", "forged-admin");
    let answer = check(&mut client, &request).await;

    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.rule, "ledger-internal");
    assert_eq!(
        answer.headers.get("x-authz-workload").map(String::as_str),
        Some(LEDGER)
    );
    assert!(
        answer
            .headers_to_remove
            .contains(&"x-authz-subject".to_owned())
    );
}

#[tokio::test]
async fn deny_rule_overrides_and_explains() {
    let server = example_server().await;
    let mut client = server.client().await;

    let answer = check(
        &mut client,
        &Check::new("GET", "shop.example.org", "/admin/users").principal(LEDGER),
    )
    .await;

    assert!(!answer.allowed);
    assert_eq!(answer.grpc_code, 7);
    assert_eq!(answer.http_status, 403);
    assert_eq!(answer.rule, "block-admin");
    assert_eq!(answer.reason, "denied_by_rule");
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["reason"], "denied_by_rule");
    assert_eq!(body["decision_id"], answer.decision_id.as_str());
    assert!(
        body.get("rule").is_none(),
        "deny body must not reveal policy internals"
    );
}

#[tokio::test]
async fn unmatched_request_is_denied_by_default() {
    let server = example_server().await;
    let mut client = server.client().await;

    let answer = check(
        &mut client,
        &Check::new("GET", "shop.example.org", "/internal/balances").principal(FRONTEND),
    )
    .await;

    assert!(!answer.allowed);
    assert_eq!(answer.reason, "no_matching_rule");
    assert_eq!(answer.rule, "");
    assert_eq!(answer.http_status, 403);
}

#[tokio::test]
async fn ambiguous_paths_are_denied_with_their_reason() {
    let server = example_server().await;
    let mut client = server.client().await;

    let cases = [
        ("/internal%2Fbalances", "path_encoded_slash"),
        ("/internal%5cbalances", "path_encoded_slash"),
        ("/internal/%2e%2e/admin", "path_encoded_dot"),
        ("/internal\\balances", "path_backslash"),
        ("/internal/a%00", "path_control_character"),
        ("/internal/a%zz", "path_invalid_encoding"),
        ("/internal/a;x=1", "path_parameter"),
        ("/internal//balances", "path_empty_segment"),
        ("/internal/%2541", "path_encoded_percent"),
        ("internal/balances", "path_not_absolute"),
    ];
    for (path, reason) in cases {
        let request = Check::new("GET", "ledger.internal", path).principal(LEDGER);
        let answer = check(&mut client, &request).await;
        assert!(!answer.allowed, "{path}");
        assert_eq!(answer.reason, reason, "{path}");
        assert_eq!(answer.http_status, 403, "{path}");
    }
}

#[tokio::test]
async fn missing_http_attributes_get_a_deny() {
    let server = example_server().await;
    let mut client = server.client().await;

    let response = client
        .check(envoy_types::pb::envoy::service::auth::v3::CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let answer = common::Answer::from_response(response);

    assert!(!answer.allowed);
    assert_eq!(answer.reason, "missing_http_attributes");
}

#[tokio::test]
async fn invalid_principal_is_denied() {
    let server = example_server().await;
    let mut client = server.client().await;

    let request = Check::new("GET", "x", "/internal/a").principal("spiffe://Example.org/ns/a");
    let answer = check(&mut client, &request).await;

    assert!(!answer.allowed);
    assert_eq!(answer.reason, "invalid_principal");
}

const CONDITION_BUNDLE: &str = r#"
format: 1
name: conditions
revision: r1
"#;

const CONDITION_RULES: &str = r#"
rules:
  - id: tenant-reports
    effect: allow
    methods: [GET]
    paths: ["/tenants/{tenant}/reports/{report}"]
    condition: >
      request.headers["x-tenant"] == path.tenant &&
      int(request.query["limit"]) <= 100 &&
      request.context_extensions["zone"] == "eu"
"#;

#[tokio::test]
async fn condition_uses_path_variables_both_ways() {
    let dir = write_bundle(&[
        ("bundle.yaml", CONDITION_BUNDLE),
        ("rules/r.yaml", CONDITION_RULES),
    ]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let request = |tenant: &str, limit: &str| {
        Check::new(
            "GET",
            "api",
            &format!("/tenants/acme/reports/q1?limit={limit}"),
        )
        .header("x-tenant", tenant)
        .extension("zone", "eu")
    };

    let allowed = check(&mut client, &request("acme", "50")).await;
    let wrong_tenant = check(&mut client, &request("globex", "50")).await;
    let over_limit = check(&mut client, &request("acme", "500")).await;
    let missing_header = check(
        &mut client,
        &Check::new("GET", "api", "/tenants/acme/reports/q1?limit=5").extension("zone", "eu"),
    )
    .await;

    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.rule, "tenant-reports");
    assert!(!wrong_tenant.allowed);
    assert_eq!(wrong_tenant.reason, "no_matching_rule");
    assert!(!over_limit.allowed);
    assert!(!missing_header.allowed, "a condition error never allows");
}

#[tokio::test]
async fn deny_condition_error_denies() {
    let rules = r#"
rules:
  - id: everything
    effect: allow
  - id: broken-deny
    effect: deny
    condition: int(request.headers["x-level"]) > 3
"#;
    let dir = write_bundle(&[("bundle.yaml", CONDITION_BUNDLE), ("rules/r.yaml", rules)]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let low = check(
        &mut client,
        &Check::new("GET", "api", "/x").header("x-level", "1"),
    )
    .await;
    let unparsable = check(
        &mut client,
        &Check::new("GET", "api", "/x").header("x-level", "high"),
    )
    .await;

    assert!(low.allowed, "{low:?}");
    assert!(!unparsable.allowed);
    assert_eq!(unparsable.reason, "condition_error");
    assert_eq!(unparsable.rule, "broken-deny");
}

#[tokio::test]
async fn oversized_requests_get_a_check_response() {
    let rules = "rules:\n  - id: all\n    effect: allow\n";
    let dir = write_bundle(&[("bundle.yaml", CONDITION_BUNDLE), ("rules/r.yaml", rules)]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let mut big_body = Check::new("POST", "api", "/upload").build();
    if let Some(http) = big_body
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.body = "x".repeat(4_300_000);
    }
    let body_answer = common::Answer::from_response(
        client
            .check(big_body)
            .await
            .expect("4.1 MiB body")
            .into_inner(),
    );
    let big_header = check(
        &mut client,
        &Check::new("GET", "api", "/x").header("authorization", &"a".repeat(300 * 1024)),
    )
    .await;
    let mut many = Check::new("GET", "api", "/x");
    for i in 0..2000 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    let many_headers = check(&mut client, &many).await;

    assert!(body_answer.allowed, "{body_answer:?}");
    assert_eq!(big_header.http_status, 431);
    assert_eq!(big_header.reason, "request_too_large");
    assert_eq!(many_headers.http_status, 431);
}

#[tokio::test]
async fn header_map_form_is_read() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};

    let rules = r#"
rules:
  - id: role-admin
    effect: deny
    headers: {x-role: [admin]}
  - id: all
    effect: allow
"#;
    let dir = write_bundle(&[("bundle.yaml", CONDITION_BUNDLE), ("rules/r.yaml", rules)]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let mut request = Check::new("GET", "api", "/x").build();
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.clear();
        http.header_map = Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "x-role".to_owned(),
                    raw_value: b"viewer".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "x-role".to_owned(),
                    raw_value: b"admin".to_vec(),
                    ..Default::default()
                },
            ],
        });
    }
    let answer = common::Answer::from_response(client.check(request).await.unwrap().into_inner());

    assert!(!answer.allowed);
    assert_eq!(answer.rule, "role-admin");
}

#[tokio::test]
async fn audit_bundle_allows_and_explains() {
    let manifest = "format: 1\nname: shadow\nrevision: s1\nmode: audit\n";
    let rules = r#"
rules:
  - id: block-admin
    effect: deny
    paths: ["/admin/**"]
  - id: preview
    effect: allow
    mode: audit
    paths: ["/admin/**"]
"#;
    let dir = write_bundle(&[("bundle.yaml", manifest), ("rules/r.yaml", rules)]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let answer = check(&mut client, &Check::new("GET", "api", "/admin/users")).await;

    assert!(answer.allowed, "an audit bundle never denies: {answer:?}");
    assert_eq!(answer.reason, "audit_mode");
    assert_eq!(
        answer.rule, "block-admin",
        "the rule that would have decided"
    );
}
