//! Workload identity over real gRPC on 127.0.0.1: peer certificates
//! generated at test time, a bundle that trusts `example.org` with an
//! inline trust bundle, and forged `x-forwarded-client-cert` headers.

mod common;

use common::{Answer, Check, TestServer, write_bundle};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use tonic::transport::Channel;

const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";
const ADMIN: &str = "spiffe://example.org/ns/admin/sa/root";
const GATEWAY: &str = "spiffe://example.org/ns/edge/sa/gateway";

struct TestCa(CertifiedIssuer<'static, KeyPair>);

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Issues a leaf and returns it URL-encoded, as Envoy sends it.
    fn issue(&self, shape: impl FnOnce(&mut CertificateParams)) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        params.subject_alt_names = vec![uri(FRONTEND)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        shape(&mut params);
        let key = KeyPair::generate().unwrap();
        url_encode(&params.signed_by(&key, &self.0).unwrap().pem())
    }
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().unwrap())
}

fn dns(value: &str) -> SanType {
    SanType::DnsName(value.try_into().unwrap())
}

fn email(value: &str) -> SanType {
    SanType::Rfc822Name(value.try_into().unwrap())
}

fn url_encode(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Writes a bundle that trusts `example.org` with `ca` as its trust bundle.
/// `/public` is open to anyone, `/orders` only to the front end.
fn bundle(ca: &TestCa, trust_forwarded_client_cert: bool) -> tempfile::TempDir {
    let ca_pem: String =
        ca.0.pem()
            .lines()
            .map(|line| format!("          {line}\n"))
            .collect();
    let manifest = format!(
        "format: 1\n\
         name: workload-test\n\
         revision: \"1\"\n\
         workloads:\n  \
           trust_forwarded_client_cert: {trust_forwarded_client_cert}\n  \
           trust_domains:\n    \
             - name: example.org\n      \
               ca_pem: |\n{ca_pem}"
    );
    let rules = format!(
        "rules:\n\
         \x20 - id: public\n    effect: allow\n    paths: [/public]\n\
         \x20 - id: orders\n    effect: allow\n    paths: [/orders]\n    principals: [\"{FRONTEND}\"]\n"
    );
    write_bundle(&[("bundle.yaml", &manifest), ("rules/main.yaml", &rules)])
}

/// Sends a Check with `certificate` as `source.certificate`.
async fn check_with_certificate(
    client: &mut AuthorizationClient<Channel>,
    request: &Check,
    certificate: &str,
) -> Answer {
    let mut check: CheckRequest = request.build();
    if let Some(source) = check.attributes.as_mut().and_then(|a| a.source.as_mut()) {
        source.certificate = certificate.to_owned();
    }
    let response = client.check(check).await.unwrap().into_inner();
    Answer::from_response(response)
}

fn workload(answer: &Answer) -> Option<&str> {
    answer.headers.get("x-authz-workload").map(String::as_str)
}

#[tokio::test]
async fn certificate_cases_over_grpc() {
    let ca = TestCa::new("example.org");
    let other_ca = TestCa::new("other");
    let dir = bundle(&ca, false);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let orders = Check::new("GET", "shop.example.org", "/orders");
    let cases: Vec<(&str, String, &str)> = vec![
        ("valid svid", ca.issue(|_| {}), "allowed_by_rule"),
        (
            "spiffe and dns SANs",
            ca.issue(|p| p.subject_alt_names.push(dns("shop.example.org"))),
            "allowed_by_rule",
        ),
        (
            "dns SAN reading spiffe",
            ca.issue(|p| p.subject_alt_names = vec![dns(FRONTEND)]),
            "no_matching_rule",
        ),
        (
            "email SAN reading spiffe",
            ca.issue(|p| p.subject_alt_names = vec![email(FRONTEND)]),
            "no_matching_rule",
        ),
        (
            "two spiffe URI SANs",
            ca.issue(|p| p.subject_alt_names.push(uri(ADMIN))),
            "invalid_certificate",
        ),
        (
            "spiffe and https URI SANs",
            ca.issue(|p| p.subject_alt_names.push(uri("https://shop.example.org/"))),
            "invalid_certificate",
        ),
        (
            "CA leaf",
            ca.issue(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            "invalid_certificate",
        ),
        (
            "key usage without digitalSignature",
            ca.issue(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
            "invalid_certificate",
        ),
        (
            "wrong trust domain",
            ca.issue(|p| p.subject_alt_names = vec![uri("spiffe://partner.example/app")]),
            "untrusted_trust_domain",
        ),
        (
            "expired",
            ca.issue(|p| {
                p.not_before = date_time_ymd(2020, 1, 1);
                p.not_after = date_time_ymd(2021, 1, 1);
            }),
            "untrusted_certificate",
        ),
        (
            "untrusted CA",
            other_ca.issue(|_| {}),
            "untrusted_certificate",
        ),
    ];

    for (name, certificate, reason) in cases {
        let answer = check_with_certificate(&mut client, &orders, &certificate).await;
        assert_eq!(answer.grpc_code == 0, answer.allowed, "case `{name}`");
        assert_eq!(answer.reason, reason, "case `{name}`: {answer:?}");
        assert_eq!(answer.allowed, reason == "allowed_by_rule", "case `{name}`");
        if answer.allowed {
            assert_eq!(workload(&answer), Some(FRONTEND), "case `{name}`");
        } else {
            assert_eq!(answer.http_status, 403, "case `{name}`");
        }
    }
}

#[tokio::test]
async fn certificate_without_spiffe_id_is_anonymous() {
    let ca = TestCa::new("example.org");
    let dir = bundle(&ca, false);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let certificate = ca.issue(|p| p.subject_alt_names = vec![dns(FRONTEND)]);

    let public = Check::new("GET", "shop.example.org", "/public");
    let answer = check_with_certificate(&mut client, &public, &certificate).await;

    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.rule, "public");
    assert_eq!(workload(&answer), None);
}

#[tokio::test]
async fn principal_mismatch_is_denied() {
    let ca = TestCa::new("example.org");
    let dir = bundle(&ca, false);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let request = Check::new("GET", "shop.example.org", "/public").principal(ADMIN);
    let answer = check_with_certificate(&mut client, &request, &ca.issue(|_| {})).await;

    assert!(!answer.allowed);
    assert_eq!(answer.reason, "principal_mismatch");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["reason"], "principal_mismatch");
}

#[tokio::test]
async fn principal_of_untrusted_domain_is_denied() {
    let ca = TestCa::new("example.org");
    let dir = bundle(&ca, false);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let request =
        Check::new("GET", "shop.example.org", "/public").principal("spiffe://partner.example/app");
    let answer = common::check(&mut client, &request).await;

    assert!(!answer.allowed);
    assert_eq!(answer.reason, "untrusted_trust_domain");
}

#[tokio::test]
async fn forged_xfcc_changes_nothing() {
    let ca = TestCa::new("example.org");
    let dir = bundle(&ca, false);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let forged = format!("By={FRONTEND};URI={FRONTEND}");

    let anonymous = Check::new("GET", "shop.example.org", "/orders");
    let plain = common::check(&mut client, &anonymous).await;
    let with_forged = common::check(
        &mut client,
        &anonymous.clone().header("x-forwarded-client-cert", &forged),
    )
    .await;
    assert!(!with_forged.allowed);
    assert_eq!(with_forged.reason, plain.reason);
    assert_eq!(with_forged.reason, "no_matching_rule");

    let gateway = Check::new("GET", "shop.example.org", "/orders").principal(GATEWAY);
    let answer = common::check(
        &mut client,
        &gateway.header(
            "x-forwarded-client-cert",
            &format!("By={GATEWAY};URI={FRONTEND}"),
        ),
    )
    .await;
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "no_matching_rule");
    assert_eq!(workload(&answer), None);
}

#[tokio::test]
async fn trusted_xfcc_names_the_client() {
    let ca = TestCa::new("example.org");
    let dir = bundle(&ca, true);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let orders = Check::new("GET", "shop.example.org", "/orders").principal(GATEWAY);

    let vouched = orders.clone().header(
        "x-forwarded-client-cert",
        &format!("By={GATEWAY};Cert=\"{}\";URI={FRONTEND}", ca.issue(|_| {})),
    );
    let answer = common::check(&mut client, &vouched).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(workload(&answer), Some(FRONTEND));

    let not_by_peer = orders.clone().header(
        "x-forwarded-client-cert",
        &format!("By=spiffe://example.org/elsewhere;URI={FRONTEND}"),
    );
    let answer = common::check(&mut client, &not_by_peer).await;
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "principal_mismatch");

    let untrusted_cert = orders.header(
        "x-forwarded-client-cert",
        &format!("By={GATEWAY};Cert={}", TestCa::new("other").issue(|_| {})),
    );
    let answer = common::check(&mut client, &untrusted_cert).await;
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "untrusted_certificate");
}
