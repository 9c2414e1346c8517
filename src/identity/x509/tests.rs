use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};

use super::*;
use crate::identity::test_certs::{Leaf, TestCa, dns, email, uri, url_encode};

const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";

/// A named case: the leaf and the SPIFFE ID or error expected.
type Case = (
    &'static str,
    Leaf,
    Result<Option<&'static str>, CertificateError>,
);

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateChain::from_pem(pem.as_bytes())
        .unwrap()
        .leaf()
        .to_vec()
}

fn id_of(leaf: &Leaf) -> Result<Option<SpiffeId>, CertificateError> {
    let ca = TestCa::new("example.org");
    svid_id(&leaf_der(&ca.issue(leaf)))
}

#[test]
fn svid_yields_its_id() {
    let id = id_of(&Leaf::svid(FRONTEND)).unwrap().unwrap();
    assert_eq!(id.as_str(), FRONTEND);
}

#[test]
fn svid_rules_by_case() {
    let cases: Vec<Case> = vec![
        (
            "spiffe and dns SANs",
            Leaf::svid(FRONTEND).sans(vec![uri(FRONTEND), dns("frontend.example.org")]),
            Ok(Some(FRONTEND)),
        ),
        (
            "no key usage",
            Leaf::svid(FRONTEND).key_usages(vec![]),
            Ok(Some(FRONTEND)),
        ),
        (
            "key usage with key encipherment",
            Leaf::svid(FRONTEND).key_usages(vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]),
            Ok(Some(FRONTEND)),
        ),
        ("no SAN", Leaf::svid(FRONTEND).sans(vec![]), Ok(None)),
        (
            "dns SAN reading spiffe",
            Leaf::svid(FRONTEND).sans(vec![dns(FRONTEND)]),
            Ok(None),
        ),
        (
            "email SAN reading spiffe",
            Leaf::svid(FRONTEND).sans(vec![email(FRONTEND)]),
            Ok(None),
        ),
        (
            "https URI SAN only",
            Leaf::svid(FRONTEND).sans(vec![uri("https://frontend.example.org/")]),
            Ok(None),
        ),
        (
            "two spiffe URI SANs",
            Leaf::svid(FRONTEND).sans(vec![uri(FRONTEND), uri("spiffe://example.org/admin")]),
            Err(CertificateError::UriSanCount(2)),
        ),
        (
            "spiffe and https URI SANs",
            Leaf::svid(FRONTEND).sans(vec![uri("https://frontend.example.org/"), uri(FRONTEND)]),
            Err(CertificateError::UriSanCount(2)),
        ),
        (
            "CA leaf",
            Leaf::svid(FRONTEND).ca(),
            Err(CertificateError::CaLeaf),
        ),
        (
            "key usage without digitalSignature",
            Leaf::svid(FRONTEND).key_usages(vec![KeyUsagePurpose::KeyEncipherment]),
            Err(CertificateError::KeyUsage),
        ),
        (
            "key usage with keyCertSign",
            Leaf::svid(FRONTEND).key_usages(vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ]),
            Err(CertificateError::KeyUsage),
        ),
        (
            "key usage with cRLSign",
            Leaf::svid(FRONTEND).key_usages(vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::CrlSign,
            ]),
            Err(CertificateError::KeyUsage),
        ),
        (
            "upper case scheme",
            Leaf::svid(FRONTEND).sans(vec![uri("SPIFFE://example.org/a")]),
            Err(CertificateError::InvalidSpiffeId(
                SpiffeIdError::WrongScheme,
            )),
        ),
        (
            "trailing slash",
            Leaf::svid(FRONTEND).sans(vec![uri("spiffe://example.org/a/")]),
            Err(CertificateError::InvalidSpiffeId(
                SpiffeIdError::TrailingSlash,
            )),
        ),
    ];

    for (name, leaf, expected) in cases {
        let actual = id_of(&leaf);
        let actual = actual.as_ref().map(|id| id.as_ref().map(SpiffeId::as_str));
        assert_eq!(actual, expected.as_ref().map(|id| *id), "case `{name}`");
    }
}

#[test]
fn url_encoded_chain_decodes() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(&Leaf::svid(FRONTEND));
    let chain = CertificateChain::from_url_encoded_pem(&url_encode(&format!("{leaf}{}", ca.pem())))
        .unwrap();

    assert_eq!(chain.intermediates().len(), 1);
    assert_eq!(chain.spiffe_id().unwrap().unwrap().as_str(), FRONTEND);
}

#[test]
fn plus_is_not_a_space() {
    assert_eq!(percent_decode("a+b%2Bc%2f").unwrap(), b"a+b+c/");
}

#[test]
fn bad_chain_data_is_rejected() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(&Leaf::svid(FRONTEND));
    let nine = leaf.repeat(MAX_CHAIN_LENGTH + 1);
    let cases = [
        (
            "bad escape",
            "%zz".to_owned(),
            CertificateError::InvalidEncoding,
        ),
        (
            "cut escape",
            "abc%4".to_owned(),
            CertificateError::InvalidEncoding,
        ),
        (
            "no PEM",
            "hello".to_owned(),
            CertificateError::NoCertificate,
        ),
        (
            "bad base64",
            "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n".to_owned(),
            CertificateError::InvalidPem,
        ),
        (
            "too many certificates",
            url_encode(&nine),
            CertificateError::ChainTooLong,
        ),
        (
            "too long",
            "a".repeat(MAX_ENCODED_CHAIN_BYTES + 1),
            CertificateError::TooLong,
        ),
    ];
    for (name, encoded, expected) in cases {
        assert_eq!(
            CertificateChain::from_url_encoded_pem(&encoded).map(|_| ()),
            Err(expected),
            "case `{name}`"
        );
    }
}

#[test]
fn non_certificate_der_is_invalid() {
    assert!(matches!(
        svid_id(b"\x30\x03\x02\x01\x01"),
        Err(CertificateError::InvalidDer(_))
    ));
}

#[test]
fn chain_verifies_against_its_ca() {
    let ca = TestCa::new("example.org");
    let anchors = trust_anchors_from_pem(&ca.pem()).unwrap();
    let chain = CertificateChain::from_pem(ca.issue(&Leaf::svid(FRONTEND)).as_bytes()).unwrap();

    assert_eq!(chain.verify(&anchors, UnixTime::now()), Ok(()));
}

#[test]
fn chain_without_eku_verifies() {
    let ca = TestCa::new("example.org");
    let anchors = trust_anchors_from_pem(&ca.pem()).unwrap();
    let mut leaf = Leaf::svid(FRONTEND);
    leaf.extended_key_usages = vec![];
    let chain = CertificateChain::from_pem(ca.issue(&leaf).as_bytes()).unwrap();

    assert_eq!(chain.verify(&anchors, UnixTime::now()), Ok(()));
}

#[test]
fn chain_failures_are_untrusted() {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other");
    let anchors = trust_anchors_from_pem(&ca.pem()).unwrap();
    let mut server_only = Leaf::svid(FRONTEND);
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let cases = [
        (
            "expired",
            ca.issue(&Leaf::svid(FRONTEND).expired()),
            "expired",
        ),
        (
            "other CA",
            other.issue(&Leaf::svid(FRONTEND)),
            "no trust anchor",
        ),
        ("server auth only", ca.issue(&server_only), "clientAuth"),
    ];
    for (name, pem, expected) in cases {
        let chain = CertificateChain::from_pem(pem.as_bytes()).unwrap();
        let error = chain.verify(&anchors, UnixTime::now()).unwrap_err();
        assert_eq!(
            error.reason(),
            Reason::UntrustedCertificate,
            "case `{name}`"
        );
        assert!(
            error.to_string().contains(expected),
            "case `{name}`: {error}"
        );
    }
}

#[test]
fn trust_bundle_must_hold_ca_certificates() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(&Leaf::svid(FRONTEND));

    assert_eq!(
        trust_anchors_from_pem(&format!("{}{}", ca.pem(), TestCa::new("b").pem())).map(|a| a.len()),
        Ok(2)
    );
    assert!(
        trust_anchors_from_pem(&leaf)
            .unwrap_err()
            .contains("is not a CA certificate")
    );
    assert_eq!(
        trust_anchors_from_pem("").unwrap_err(),
        "contains no PEM certificate"
    );
}
