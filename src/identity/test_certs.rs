//! Certificates generated at test time with rcgen: a CA per trust domain and
//! leaves shaped as each test needs.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// A self-signed CA that issues leaves.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a leaf from `spec` and returns its PEM.
    pub fn issue(&self, spec: &Leaf) -> String {
        let key = KeyPair::generate().unwrap();
        spec.params().signed_by(&key, &self.issuer).unwrap().pem()
    }
}

/// The shape of a leaf certificate. [`Leaf::svid`] is a valid X.509-SVID;
/// each setter breaks or changes one property.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub sans: Vec<SanType>,
    pub is_ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub expired: bool,
}

impl Leaf {
    pub fn svid(id: &str) -> Leaf {
        Leaf {
            sans: vec![uri(id)],
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired: false,
        }
    }

    pub fn sans(mut self, sans: Vec<SanType>) -> Leaf {
        self.sans = sans;
        self
    }

    pub fn ca(mut self) -> Leaf {
        self.is_ca = true;
        self
    }

    pub fn key_usages(mut self, usages: Vec<KeyUsagePurpose>) -> Leaf {
        self.key_usages = usages;
        self
    }

    pub fn expired(mut self) -> Leaf {
        self.expired = true;
        self
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        params.subject_alt_names = self.sans.clone();
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = self.key_usages.clone();
        params.extended_key_usages = self.extended_key_usages.clone();
        if self.expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        params
    }
}

pub fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().unwrap())
}

pub fn dns(value: &str) -> SanType {
    SanType::DnsName(value.try_into().unwrap())
}

pub fn email(value: &str) -> SanType {
    SanType::Rfc822Name(value.try_into().unwrap())
}

/// URL-encodes PEM the way Envoy encodes `source.certificate`.
pub fn url_encode(pem: &str) -> String {
    let mut encoded = String::with_capacity(pem.len() * 2);
    for byte in pem.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
