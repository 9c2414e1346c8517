use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use rcgen::KeyUsagePurpose;

use super::*;
use crate::identity::test_certs::{Leaf, TestCa, dns, uri, url_encode};
use crate::policy::model::TrustDomainSpec;
use crate::request::PathOptions;

const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";
const GATEWAY: &str = "spiffe://example.org/ns/edge/sa/gateway";
const PARTNER: &str = "spiffe://partner.example/app";

/// A named case: principal, certificate or XFCC header, and the expected
/// workload or deny reason.
type Case = (
    &'static str,
    &'static str,
    String,
    Result<Option<&'static str>, Reason>,
);

/// The parts of a CheckRequest that carry workload identity.
#[derive(Default)]
struct Sources {
    principal: &'static str,
    certificate: String,
    xfcc: Option<String>,
}

fn check_request(sources: &Sources) -> CheckRequest {
    let mut headers = HashMap::new();
    if let Some(xfcc) = &sources.xfcc {
        headers.insert(xfcc::HEADER.to_owned(), xfcc.clone());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: sources.principal.to_owned(),
                certificate: sources.certificate.clone(),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    host: "shop.example.org".to_owned(),
                    path: "/".to_owned(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn resolve(policy: &WorkloadPolicy, sources: &Sources) -> Result<Option<String>, Reason> {
    let check = check_request(sources);
    let facts = RequestFacts::from_check(&check, PathOptions::default()).unwrap();
    policy
        .resolve(&facts, UnixTime::now())
        .map(|id| id.map(|id| id.to_string()))
        .map_err(|e| e.reason)
}

fn domain(name: &str, ca: Option<&TestCa>) -> TrustDomainSpec {
    TrustDomainSpec {
        name: name.to_owned(),
        ca_pem: ca.map(TestCa::pem),
        allow_unverified_certificates: false,
    }
}

fn compile(spec: WorkloadSpec) -> WorkloadPolicy {
    let mut errors = Vec::new();
    let policy = WorkloadPolicy::compile(&spec, &mut errors);
    assert_eq!(errors, Vec::<String>::new());
    policy
}

fn compile_errors(spec: WorkloadSpec) -> Vec<String> {
    let mut errors = Vec::new();
    WorkloadPolicy::compile(&spec, &mut errors);
    errors
}

/// Compiles a policy that trusts `example.org` with `ca` as its trust bundle.
fn trusting(ca: &TestCa) -> WorkloadPolicy {
    compile(WorkloadSpec {
        trust_domains: vec![domain("example.org", Some(ca))],
        trust_forwarded_client_cert: false,
    })
}

fn with_xfcc(mut policy: WorkloadPolicy) -> WorkloadPolicy {
    policy.trust_forwarded_client_cert = true;
    policy
}

fn cert(ca: &TestCa, leaf: &Leaf) -> String {
    url_encode(&ca.issue(leaf))
}

#[test]
fn nothing_means_no_identity() {
    assert_eq!(
        resolve(&WorkloadPolicy::default(), &Sources::default()),
        Ok(None)
    );
}

#[test]
fn principal_alone_is_the_identity() {
    let sources = Sources {
        principal: FRONTEND,
        ..Sources::default()
    };
    assert_eq!(
        resolve(&WorkloadPolicy::default(), &sources),
        Ok(Some(FRONTEND.to_owned()))
    );
}

#[test]
fn invalid_principal_is_denied() {
    let sources = Sources {
        principal: "frontend.example.org",
        ..Sources::default()
    };
    assert_eq!(
        resolve(&WorkloadPolicy::default(), &sources),
        Err(Reason::InvalidPrincipal)
    );
}

#[test]
fn certificate_cases() {
    let ca = TestCa::new("example.org");
    let other_ca = TestCa::new("other");
    let policy = trusting(&ca);
    let svid = cert(&ca, &Leaf::svid(FRONTEND));

    let cases: Vec<Case> = vec![
        ("valid svid", "", svid.clone(), Ok(Some(FRONTEND))),
        (
            "valid svid and its principal",
            FRONTEND,
            svid.clone(),
            Ok(Some(FRONTEND)),
        ),
        (
            "principal of another workload",
            GATEWAY,
            svid.clone(),
            Err(Reason::PrincipalMismatch),
        ),
        (
            "spiffe and dns SANs",
            "",
            cert(
                &ca,
                &Leaf::svid(FRONTEND).sans(vec![uri(FRONTEND), dns("shop.example.org")]),
            ),
            Ok(Some(FRONTEND)),
        ),
        (
            "dns SAN reading spiffe",
            "",
            cert(&ca, &Leaf::svid(FRONTEND).sans(vec![dns(FRONTEND)])),
            Ok(None),
        ),
        (
            "dns SAN reading spiffe with Envoy's principal",
            FRONTEND,
            cert(&ca, &Leaf::svid(FRONTEND).sans(vec![dns(FRONTEND)])),
            Err(Reason::PrincipalMismatch),
        ),
        (
            "two URI SANs with Envoy's principal",
            FRONTEND,
            cert(
                &ca,
                &Leaf::svid(FRONTEND).sans(vec![uri(FRONTEND), uri(GATEWAY)]),
            ),
            Err(Reason::InvalidCertificate),
        ),
        (
            "spiffe and https URI SANs",
            "",
            cert(
                &ca,
                &Leaf::svid(FRONTEND).sans(vec![uri(FRONTEND), uri("https://shop.example.org")]),
            ),
            Err(Reason::InvalidCertificate),
        ),
        (
            "CA leaf",
            "",
            cert(&ca, &Leaf::svid(FRONTEND).ca()),
            Err(Reason::InvalidCertificate),
        ),
        (
            "key usage without digitalSignature",
            "",
            cert(
                &ca,
                &Leaf::svid(FRONTEND).key_usages(vec![KeyUsagePurpose::KeyAgreement]),
            ),
            Err(Reason::InvalidCertificate),
        ),
        (
            "expired",
            "",
            cert(&ca, &Leaf::svid(FRONTEND).expired()),
            Err(Reason::UntrustedCertificate),
        ),
        (
            "untrusted CA",
            "",
            cert(&other_ca, &Leaf::svid(FRONTEND)),
            Err(Reason::UntrustedCertificate),
        ),
        (
            "wrong trust domain",
            "",
            cert(&ca, &Leaf::svid(PARTNER)),
            Err(Reason::UntrustedTrustDomain),
        ),
        (
            "garbage",
            "",
            "%%%".to_owned(),
            Err(Reason::InvalidCertificate),
        ),
        (
            "not PEM",
            "",
            "hello".to_owned(),
            Err(Reason::InvalidCertificate),
        ),
    ];

    for (name, principal, certificate, expected) in cases {
        let sources = Sources {
            principal,
            certificate,
            xfcc: None,
        };
        assert_eq!(
            resolve(&policy, &sources),
            expected.map(|id| id.map(str::to_owned)),
            "case `{name}`"
        );
    }
}

#[test]
fn principal_from_untrusted_domain_is_denied() {
    let ca = TestCa::new("example.org");
    let sources = Sources {
        principal: PARTNER,
        ..Sources::default()
    };
    assert_eq!(
        resolve(&trusting(&ca), &sources),
        Err(Reason::UntrustedTrustDomain)
    );
}

#[test]
fn no_trust_domains_leaves_chains_to_envoy() {
    let other_ca = TestCa::new("other");
    let sources = Sources {
        certificate: cert(&other_ca, &Leaf::svid(PARTNER)),
        ..Sources::default()
    };
    assert_eq!(
        resolve(&WorkloadPolicy::default(), &sources),
        Ok(Some(PARTNER.to_owned()))
    );
}

#[test]
fn domain_without_trust_bundle_rejects_certificates() {
    let ca = TestCa::new("example.org");
    let policy = compile(WorkloadSpec {
        trust_domains: vec![domain("example.org", None)],
        trust_forwarded_client_cert: false,
    });

    let with_certificate = Sources {
        certificate: cert(&ca, &Leaf::svid(FRONTEND)),
        ..Sources::default()
    };
    assert_eq!(
        resolve(&policy, &with_certificate),
        Err(Reason::UntrustedCertificate)
    );

    let principal_only = Sources {
        principal: FRONTEND,
        ..Sources::default()
    };
    assert_eq!(
        resolve(&policy, &principal_only),
        Ok(Some(FRONTEND.to_owned()))
    );
}

#[test]
fn unverified_domain_accepts_any_issuer() {
    let other_ca = TestCa::new("other");
    let mut entry = domain("example.org", None);
    entry.allow_unverified_certificates = true;
    let policy = compile(WorkloadSpec {
        trust_domains: vec![entry],
        trust_forwarded_client_cert: false,
    });

    let sources = Sources {
        certificate: cert(&other_ca, &Leaf::svid(FRONTEND)),
        ..Sources::default()
    };
    assert_eq!(resolve(&policy, &sources), Ok(Some(FRONTEND.to_owned())));

    let ca_leaf = Sources {
        certificate: cert(&other_ca, &Leaf::svid(FRONTEND).ca()),
        ..Sources::default()
    };
    assert_eq!(resolve(&policy, &ca_leaf), Err(Reason::InvalidCertificate));
}

#[test]
fn forged_xfcc_is_ignored_by_default() {
    let ca = TestCa::new("example.org");
    let policy = trusting(&ca);
    let forged = format!("By={FRONTEND};URI=spiffe://example.org/ns/admin/sa/root");

    let anonymous = Sources {
        xfcc: Some(forged.clone()),
        ..Sources::default()
    };
    assert_eq!(resolve(&policy, &anonymous), Ok(None));

    let peer = Sources {
        principal: FRONTEND,
        xfcc: Some(forged),
        ..Sources::default()
    };
    assert_eq!(resolve(&policy, &peer), Ok(Some(FRONTEND.to_owned())));

    let malformed = Sources {
        principal: FRONTEND,
        xfcc: Some("\"".to_owned()),
        ..Sources::default()
    };
    assert_eq!(resolve(&policy, &malformed), Ok(Some(FRONTEND.to_owned())));
}

#[test]
fn trusted_xfcc_cases() {
    let ca = TestCa::new("example.org");
    let other_ca = TestCa::new("other");
    let policy = with_xfcc(trusting(&ca));
    let client_pem = ca.issue(&Leaf::svid(FRONTEND));
    let client = url_encode(&client_pem);
    let client_der = CertificateChain::from_pem(client_pem.as_bytes())
        .unwrap()
        .leaf()
        .to_vec();
    let hash: String = Sha256::digest(&client_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let chain = url_encode(&format!("{client_pem}{}", ca.pem()));

    let cases: Vec<Case> = vec![
        (
            "URI without peer",
            "",
            format!("URI={FRONTEND}"),
            Ok(Some(FRONTEND)),
        ),
        (
            "URI added by the peer",
            GATEWAY,
            format!("By={GATEWAY};URI={FRONTEND}"),
            Ok(Some(FRONTEND)),
        ),
        (
            "appended by the peer's own proxy",
            GATEWAY,
            format!("By={GATEWAY};URI={FRONTEND},By=spiffe://example.org/sidecar;URI={GATEWAY}"),
            Ok(Some(GATEWAY)),
        ),
        (
            "not added by the peer",
            GATEWAY,
            format!("By=spiffe://example.org/elsewhere;URI={FRONTEND}"),
            Err(Reason::PrincipalMismatch),
        ),
        (
            "only the last element counts",
            GATEWAY,
            format!("By={GATEWAY};URI={FRONTEND},URI=spiffe://example.org/x"),
            Err(Reason::PrincipalMismatch),
        ),
        (
            "element without identity",
            GATEWAY,
            format!("By={GATEWAY};DNS=client.example.org"),
            Ok(None),
        ),
        (
            "DNS reading spiffe",
            "",
            format!("DNS={FRONTEND}"),
            Ok(None),
        ),
        (
            "two URIs",
            "",
            format!("URI={FRONTEND};URI=https://shop.example.org"),
            Err(Reason::InvalidCertificate),
        ),
        (
            "invalid URI",
            "",
            "URI=spiffe://example.org/a/".to_owned(),
            Err(Reason::InvalidCertificate),
        ),
        (
            "untrusted URI domain",
            "",
            format!("URI={PARTNER}"),
            Err(Reason::UntrustedTrustDomain),
        ),
        (
            "malformed header",
            "",
            "URI=\"abc".to_owned(),
            Err(Reason::InvalidCertificate),
        ),
        ("Cert", "", format!("Cert=\"{client}\""), Ok(Some(FRONTEND))),
        (
            "Cert with Hash and URI",
            "",
            format!("Hash={hash};Cert={client};URI={FRONTEND}"),
            Ok(Some(FRONTEND)),
        ),
        (
            "Cert with Chain",
            "",
            format!("Cert={client};Chain={chain}"),
            Ok(Some(FRONTEND)),
        ),
        (
            "Chain alone",
            "",
            format!("Chain={chain}"),
            Ok(Some(FRONTEND)),
        ),
        (
            "Hash of another certificate",
            "",
            format!("Hash={};Cert={client}", "0".repeat(64)),
            Err(Reason::InvalidCertificate),
        ),
        (
            "URI differs from Cert",
            "",
            format!("Cert={client};URI={GATEWAY}"),
            Err(Reason::PrincipalMismatch),
        ),
        (
            "Chain of another leaf",
            "",
            format!("Cert={};Chain={chain}", cert(&ca, &Leaf::svid(GATEWAY))),
            Err(Reason::InvalidCertificate),
        ),
        (
            "Cert from untrusted CA",
            "",
            format!("Cert={}", cert(&other_ca, &Leaf::svid(FRONTEND))),
            Err(Reason::UntrustedCertificate),
        ),
        (
            "expired Cert",
            "",
            format!("Cert={}", cert(&ca, &Leaf::svid(FRONTEND).expired())),
            Err(Reason::UntrustedCertificate),
        ),
        (
            "CA as Cert",
            "",
            format!("Cert={}", cert(&ca, &Leaf::svid(FRONTEND).ca())),
            Err(Reason::InvalidCertificate),
        ),
    ];

    for (name, principal, header, expected) in cases {
        let sources = Sources {
            principal,
            certificate: String::new(),
            xfcc: Some(header),
        };
        assert_eq!(
            resolve(&policy, &sources),
            expected.map(|id| id.map(str::to_owned)),
            "case `{name}`"
        );
    }
}

#[test]
fn trusted_xfcc_absent_keeps_peer() {
    let ca = TestCa::new("example.org");
    let sources = Sources {
        principal: GATEWAY,
        ..Sources::default()
    };
    assert_eq!(
        resolve(&with_xfcc(trusting(&ca)), &sources),
        Ok(Some(GATEWAY.to_owned()))
    );
}

#[test]
fn compile_rejects_bad_trust_domains() {
    let ca = TestCa::new("example.org");
    let leaf_pem = ca.issue(&Leaf::svid(FRONTEND));
    let mut both = domain("both.example", Some(&ca));
    both.allow_unverified_certificates = true;
    let mut leaf_bundle = domain("leaf.example", None);
    leaf_bundle.ca_pem = Some(leaf_pem);
    let mut no_pem = domain("empty.example", None);
    no_pem.ca_pem = Some("not pem".to_owned());

    let errors = compile_errors(WorkloadSpec {
        trust_domains: vec![
            domain("example.org", Some(&ca)),
            domain("example.org", None),
            domain("Example.org", None),
            domain("spiffe://id.example", None),
            both,
            leaf_bundle,
            no_pem,
        ],
        trust_forwarded_client_cert: false,
    });

    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert_eq!(
        errors[0],
        "bundle.yaml: workloads: trust domain `example.org`: listed twice"
    );
    assert_eq!(
        errors[1],
        "bundle.yaml: workloads: trust domain `Example.org`: trust domain contains `E`; only lower-case letters, digits, `.`, `-` and `_` are allowed"
    );
    assert_eq!(
        errors[2],
        "bundle.yaml: workloads: trust domain `spiffe://id.example`: write the bare trust domain name, without `spiffe://` or a path"
    );
    assert_eq!(
        errors[3],
        "bundle.yaml: workloads: trust domain `both.example`: `ca_pem` and `allow_unverified_certificates` exclude each other"
    );
    assert!(
        errors[4].contains("is not a CA certificate"),
        "{}",
        errors[4]
    );
    assert_eq!(
        errors[5],
        "bundle.yaml: workloads: trust domain `empty.example`: `ca_pem` contains no PEM certificate"
    );
}

#[test]
fn deny_detail_names_the_cause() {
    let ca = TestCa::new("example.org");
    let sources = Sources {
        principal: GATEWAY,
        certificate: cert(&ca, &Leaf::svid(FRONTEND)),
        xfcc: None,
    };
    let check = check_request(&sources);
    let facts = RequestFacts::from_check(&check, PathOptions::default()).unwrap();

    let error = trusting(&ca).resolve(&facts, UnixTime::now()).unwrap_err();

    assert_eq!(error.reason, Reason::PrincipalMismatch);
    assert_eq!(
        error.detail,
        format!(
            "source principal `{GATEWAY}` differs from the certificate's SPIFFE ID `{FRONTEND}`"
        )
    );
}
