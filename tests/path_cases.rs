//! Path, host and identity-pattern cases from public authorization bypass
//! reports, decided over real gRPC against a fixture bundle.

mod common;

use common::{Check, TestServer, check, write_bundle};

const MANIFEST: &str = r#"
format: 1
name: fixture
revision: fixture-1
"#;

const RULES: &str = r#"
rules:
  - id: admin
    effect: deny
    paths: ["/admin/**"]
  - id: public
    effect: allow
    methods: [GET]
    paths: ["/public/**"]
  - id: ping
    effect: allow
    methods: [GET]
    paths: [/api/ping]
  - id: internal
    effect: allow
    paths: ["/internal/**"]
    principals: [spiffe://example.org/ns/billing/sa/billing-api]
  - id: export
    effect: allow
    methods: [GET]
    paths: [/reports/export]
    scopes: ["reports:export"]
  - id: reports
    effect: allow
    methods: [GET]
    paths: ["/reports/**"]
    not_paths: [/reports/export]
    principals: ["spiffe://example.org/**"]
  - id: payments-host
    effect: deny
    hosts: [payments.example.org]
    not_principals: ["spiffe://example.org/ns/billing/**"]
  - id: pay
    effect: allow
    methods: [GET]
    paths: [/pay]
    principals: ["spiffe://example.org/**"]
  - id: certs
    effect: allow
    methods: [GET]
    paths: ["/certs/**"]
    principals:
      - spiffe://example.org/ns/cert-manager/sa/cert-manager.io
      - spiffe://example.org/ns/*/sa/api.v1
  - id: no-admin-role
    effect: deny
    headers: {x-role: [admin]}
    not_principals: ["spiffe://example.org/ns/ops/**"]
  - id: app1
    effect: allow
    methods: [GET]
    paths: ["/app1/**"]
  - id: app1-admin
    effect: deny
    paths: [/app1/admin]
"#;

const FRONTEND: &str = "spiffe://example.org/ns/web/sa/frontend";
const BILLING: &str = "spiffe://example.org/ns/billing/sa/billing-api";

async fn fixture() -> (tempfile::TempDir, TestServer) {
    let dir = write_bundle(&[("bundle.yaml", MANIFEST), ("rules/fixture.yaml", RULES)]);
    let server = TestServer::start(dir.path()).await;
    (dir, server)
}

#[tokio::test]
async fn path_parameters_never_reach_another_rule() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    for path in [
        "/reports/..;/internal/ledger",
        "/reports/..;x=1/internal/ledger",
        "/reports/../internal/ledger",
    ] {
        let answer = check(
            &mut client,
            &Check::new("GET", "h", path).principal(FRONTEND),
        )
        .await;
        assert!(!answer.allowed, "{path}: {answer:?}");
    }

    let answer = check(
        &mut client,
        &Check::new("GET", "h", "/reports/q1;jsessionid=abc").principal(FRONTEND),
    )
    .await;
    assert!(
        answer.rule.is_empty() || answer.rule == "reports",
        "{answer:?}"
    );
    if answer.allowed {
        assert_eq!(answer.rule, "reports");
    }
}

#[tokio::test]
async fn fragment_never_hides_a_deny() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    for path in ["/app1/admin#foo", "/app1/admin?x=1#foo", "/app1/admin"] {
        let answer = check(&mut client, &Check::new("GET", "h", path)).await;
        assert!(!answer.allowed, "{path}");
        assert_eq!(answer.rule, "app1-admin", "{path}");
    }

    let encoded = check(&mut client, &Check::new("GET", "h", "/app1/admin%23foo")).await;
    assert_ne!(encoded.rule, "app1-admin", "decided on segment `admin#foo`");
    assert_eq!(encoded.rule, "app1");
}

#[tokio::test]
async fn percent_decoding_happens_once() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    for path in [
        "/api/ping?query=%0A",
        "/api/ping?q=%25%0D%0A%00",
        "/api/%70ing",
    ] {
        let answer = check(&mut client, &Check::new("GET", "h", path)).await;
        assert!(answer.allowed, "{path}: {answer:?}");
        assert_eq!(answer.rule, "ping", "{path}");
    }

    let smuggled = check(&mut client, &Check::new("GET", "h", "/api/ping%3Fadmin=1")).await;
    assert!(!smuggled.allowed);
    assert_eq!(smuggled.reason, "no_matching_rule");

    for path in ["/public/100%", "/public/%zz"] {
        let answer = check(&mut client, &Check::new("GET", "h", path)).await;
        assert!(!answer.allowed, "{path}");
        assert_eq!(answer.reason, "path_invalid_encoding", "{path}");
    }
}

#[tokio::test]
async fn host_case_port_and_dot_are_folded() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    for host in [
        "Payments.Example.ORG",
        "payments.example.org.",
        "payments.example.org:443",
        "PAYMENTS.example.org:8443",
    ] {
        let answer = check(
            &mut client,
            &Check::new("GET", host, "/pay").principal(FRONTEND),
        )
        .await;
        assert!(!answer.allowed, "{host}");
        assert_eq!(answer.rule, "payments-host", "{host}");
    }

    let billing = check(
        &mut client,
        &Check::new("GET", "payments.example.org", "/pay").principal(BILLING),
    )
    .await;
    assert!(billing.allowed, "{billing:?}");
    assert_eq!(billing.rule, "pay");
}

#[tokio::test]
async fn identity_patterns_match_literally() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    for principal in [
        "spiffe://example.org/ns/cert-manager/sa/cert-manager-io",
        "spiffe://example.org/ns/cert-manager/sa/cert-managerXio",
        "spiffe://example.org/ns/team-a/sa/apixv1",
        "spiffe://example.org/ns/a/b/sa/api.v1",
    ] {
        let answer = check(
            &mut client,
            &Check::new("GET", "h", "/certs/a").principal(principal),
        )
        .await;
        assert!(!answer.allowed, "{principal}");
    }
    for principal in [
        "spiffe://example.org/ns/cert-manager/sa/cert-manager.io",
        "spiffe://example.org/ns/team-a/sa/api.v1",
    ] {
        let answer = check(
            &mut client,
            &Check::new("GET", "h", "/certs/a").principal(principal),
        )
        .await;
        assert!(answer.allowed, "{principal}: {answer:?}");
        assert_eq!(answer.rule, "certs");
    }
}

#[tokio::test]
async fn metacharacters_in_bundle_names_are_literal() {
    let rules = r#"
rules:
  - id: literal
    effect: allow
    hosts: ["a-b.example.org"]
    paths: ["/v1/a+b(c)[d]$e"]
    principals: ["spiffe://example.org/ns/x/sa/a.b"]
"#;
    let dir = write_bundle(&[("bundle.yaml", MANIFEST), ("rules/r.yaml", rules)]);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let exact = Check::new("GET", "a-b.example.org", "/v1/a+b(c)[d]$e")
        .principal("spiffe://example.org/ns/x/sa/a.b");
    let regex_like = Check::new("GET", "a-b.example.org", "/v1/aab(c)[d]$e")
        .principal("spiffe://example.org/ns/x/sa/a.b");
    let dot_as_any = Check::new("GET", "a-b.example.org", "/v1/a+b(c)[d]$e")
        .principal("spiffe://example.org/ns/x/sa/aXb");

    assert!(check(&mut client, &exact).await.allowed);
    assert!(!check(&mut client, &regex_like).await.allowed);
    assert!(!check(&mut client, &dot_as_any).await.allowed);
}

#[tokio::test]
async fn header_values_match_each_element() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    let joined = Check::new("GET", "h", "/api/ping").header("x-role", "viewer, admin");
    let ops = Check::new("GET", "h", "/api/ping")
        .header("x-role", "admin")
        .principal("spiffe://example.org/ns/ops/sa/tool");
    let substring = Check::new("GET", "h", "/api/ping").header("x-role", "administrator");

    let joined = check(&mut client, &joined).await;
    assert!(!joined.allowed);
    assert_eq!(joined.rule, "no-admin-role");
    assert!(check(&mut client, &ops).await.allowed);
    assert!(check(&mut client, &substring).await.allowed);
}

#[tokio::test]
async fn excluded_exact_path_needs_its_own_rule() {
    let (_dir, server) = fixture().await;
    let mut client = server.client().await;

    let export = check(
        &mut client,
        &Check::new("GET", "h", "/reports/export").principal(FRONTEND),
    )
    .await;
    let other = check(
        &mut client,
        &Check::new("GET", "h", "/reports/q4").principal(FRONTEND),
    )
    .await;

    assert!(!export.allowed, "export needs a token with reports:export");
    assert!(other.allowed);
    assert_eq!(other.rule, "reports");
}
