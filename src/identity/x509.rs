//! X.509-SVIDs: the SPIFFE ID of a peer certificate, and its chain checked
//! against a trust bundle.
//!
//! A leaf yields a SPIFFE ID only when it follows the X.509-SVID rules:
//! exactly one URI SAN, which is a valid SPIFFE ID; not a CA; and, when key
//! usage is present, `digitalSignature` without `keyCertSign` or `cRLSign`.
//! Only a URI SAN counts, so a DNS or email SAN that reads `spiffe://…`
//! yields nothing.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::decision::Reason;
use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Maximum length of a URL-encoded PEM chain. An SVID chain is a few
/// kilobytes; the bound keeps a hostile header from costing much to decode.
pub const MAX_ENCODED_CHAIN_BYTES: usize = 64 * 1024;

/// Maximum number of certificates in a chain, leaf included.
pub const MAX_CHAIN_LENGTH: usize = 8;

/// A reason a certificate yields no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the certificate is longer than {MAX_ENCODED_CHAIN_BYTES} bytes")]
    TooLong,
    #[error("the certificate has an invalid percent-encoding")]
    InvalidEncoding,
    #[error("the certificate is not valid PEM")]
    InvalidPem,
    #[error("the certificate data contains no PEM certificate")]
    NoCertificate,
    #[error("the chain has more than {MAX_CHAIN_LENGTH} certificates")]
    ChainTooLong,
    #[error("the leaf certificate is not valid DER: {0}")]
    InvalidDer(String),
    #[error("the leaf certificate has an invalid extension: {0}")]
    InvalidExtension(String),
    #[error("the leaf certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    UriSanCount(usize),
    #[error("the leaf certificate's URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(SpiffeIdError),
    #[error("the leaf certificate is a CA certificate (`CA:TRUE`)")]
    CaLeaf,
    #[error(
        "the leaf certificate's key usage must include `digitalSignature` and exclude `keyCertSign` and `cRLSign`"
    )]
    KeyUsage,
    #[error("the certificate chain does not verify: {0}")]
    Untrusted(String),
}

impl CertificateError {
    /// Returns the deny reason: [`Reason::UntrustedCertificate`] when the
    /// chain or validity period fails, [`Reason::InvalidCertificate`] otherwise.
    pub fn reason(&self) -> Reason {
        match self {
            CertificateError::Untrusted(_) => Reason::UntrustedCertificate,
            _ => Reason::InvalidCertificate,
        }
    }
}

/// A certificate chain, leaf first, as Envoy sends it.
#[derive(Debug, Clone)]
pub struct CertificateChain {
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl CertificateChain {
    /// Decodes URL-encoded PEM, the form of `source.certificate` and of the
    /// XFCC `Cert` and `Chain` values. Only `%XX` is decoded: `+` stays `+`,
    /// as it is in base64.
    pub fn from_url_encoded_pem(encoded: &str) -> Result<Self, CertificateError> {
        if encoded.len() > MAX_ENCODED_CHAIN_BYTES {
            return Err(CertificateError::TooLong);
        }
        let pem = percent_decode(encoded)?;
        Self::from_pem(&pem)
    }

    /// Decodes the CERTIFICATE sections of PEM text and ignores any other
    /// section.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertificateError> {
        let mut certificates = CertificateDer::pem_slice_iter(pem);
        let leaf = match certificates.next() {
            Some(Ok(leaf)) => leaf,
            Some(Err(_)) => return Err(CertificateError::InvalidPem),
            None => return Err(CertificateError::NoCertificate),
        };

        let mut intermediates = Vec::new();
        for certificate in certificates {
            if intermediates.len() + 1 == MAX_CHAIN_LENGTH {
                return Err(CertificateError::ChainTooLong);
            }
            intermediates.push(certificate.map_err(|_| CertificateError::InvalidPem)?);
        }
        Ok(CertificateChain {
            leaf,
            intermediates,
        })
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Replaces the intermediates with those of `other`, which must have the
    /// same leaf. Returns `false`, leaving `self` unchanged, when the leaves
    /// differ.
    pub fn adopt_intermediates(&mut self, other: CertificateChain) -> bool {
        if other.leaf != self.leaf {
            return false;
        }
        self.intermediates = other.intermediates;
        true
    }

    /// Reads the SPIFFE ID of the leaf. See [`svid_id`].
    pub fn spiffe_id(&self) -> Result<Option<SpiffeId>, CertificateError> {
        svid_id(&self.leaf)
    }

    /// Verifies the chain up to one of `anchors`, at time `now`, for client
    /// authentication (an extended key usage, if present, must include
    /// `clientAuth`).
    pub fn verify(
        &self,
        anchors: &[TrustAnchor<'static>],
        now: UnixTime,
    ) -> Result<(), CertificateError> {
        let end_entity = webpki::EndEntityCert::try_from(&self.leaf)
            .map_err(|e| CertificateError::Untrusted(describe_webpki_error(&e)))?;
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                anchors,
                &self.intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| ())
            .map_err(|e| CertificateError::Untrusted(describe_webpki_error(&e)))
    }
}

/// Reads the SPIFFE ID of a leaf certificate following the X.509-SVID rules.
///
/// Returns `Ok(None)` when no URI SAN has the `spiffe` scheme: such a
/// certificate does not claim a SPIFFE identity. A certificate that has a
/// `spiffe` URI SAN but breaks an X.509-SVID rule is an error, because a
/// SPIFFE validator must reject it.
pub fn svid_id(leaf: &[u8]) -> Result<Option<SpiffeId>, CertificateError> {
    let (rest, certificate) =
        X509Certificate::from_der(leaf).map_err(|e| CertificateError::InvalidDer(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::InvalidDer(
            "trailing data after the certificate".to_owned(),
        ));
    }

    let alternative_names = certificate
        .subject_alternative_name()
        .map_err(|e| CertificateError::InvalidExtension(e.to_string()))?;
    let names = alternative_names.as_ref().map_or(&[][..], |extension| {
        extension.value.general_names.as_slice()
    });
    if names
        .iter()
        .any(|name| matches!(name, GeneralName::Invalid(..)))
    {
        return Err(CertificateError::InvalidExtension(
            "a subject alternative name is malformed".to_owned(),
        ));
    }

    let mut uris = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri_count = uris.clone().count();
    let Some(spiffe_uri) = uris.find(|uri| has_spiffe_scheme(uri)) else {
        return Ok(None);
    };
    if uri_count != 1 {
        return Err(CertificateError::UriSanCount(uri_count));
    }
    let id = SpiffeId::parse(spiffe_uri).map_err(CertificateError::InvalidSpiffeId)?;

    let constraints = certificate
        .basic_constraints()
        .map_err(|e| CertificateError::InvalidExtension(e.to_string()))?;
    if constraints.is_some_and(|extension| extension.value.ca) {
        return Err(CertificateError::CaLeaf);
    }

    let key_usage = certificate
        .key_usage()
        .map_err(|e| CertificateError::InvalidExtension(e.to_string()))?;
    if let Some(extension) = key_usage {
        let usage = extension.value;
        if !usage.digital_signature() || usage.key_cert_sign() || usage.crl_sign() {
            return Err(CertificateError::KeyUsage);
        }
    }

    Ok(Some(id))
}

/// Parses the CA certificates of a trust bundle from PEM into trust anchors.
/// Every CERTIFICATE section must be a CA certificate (`CA:TRUE`).
pub fn trust_anchors_from_pem(pem: &str) -> Result<Vec<TrustAnchor<'static>>, String> {
    let mut anchors = Vec::new();
    for (position, certificate) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let number = position + 1;
        let certificate =
            certificate.map_err(|_| format!("certificate {number} is not valid PEM"))?;
        let (_, parsed) = X509Certificate::from_der(&certificate)
            .map_err(|e| format!("certificate {number} is not valid DER: {e}"))?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|extension| extension.value.ca);
        if !is_ca {
            return Err(format!(
                "certificate {number} (subject `{}`) is not a CA certificate",
                parsed.subject()
            ));
        }
        let anchor = webpki::anchor_from_trusted_cert(&certificate)
            .map_err(|e| format!("certificate {number} is not a usable trust anchor: {e}"))?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err("contains no PEM certificate".to_owned());
    }
    Ok(anchors)
}

/// URI schemes are case-insensitive, so `SPIFFE://…` also claims a SPIFFE
/// identity; [`SpiffeId::parse`] then rejects it.
fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
}

/// Decodes `%XX` escapes. Any other byte is kept as it is.
fn percent_decode(encoded: &str) -> Result<Vec<u8>, CertificateError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte != b'%' {
            decoded.push(byte);
            index += 1;
            continue;
        }
        let high = bytes.get(index + 1).copied().and_then(hex_value);
        let low = bytes.get(index + 2).copied().and_then(hex_value);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(CertificateError::InvalidEncoding);
        };
        decoded.push(high << 4 | low);
        index += 3;
    }
    Ok(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn describe_webpki_error(error: &webpki::Error) -> String {
    match error {
        webpki::Error::CertExpired { .. } => "a certificate has expired".to_owned(),
        webpki::Error::CertNotValidYet { .. } => "a certificate is not valid yet".to_owned(),
        webpki::Error::UnknownIssuer => {
            "no trust anchor of the trust domain issued the chain".to_owned()
        }
        webpki::Error::CaUsedAsEndEntity => "the leaf is a CA certificate".to_owned(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the leaf's extended key usage excludes `clientAuth`".to_owned()
        }
        other => format!("verification failed ({other})"),
    }
}

#[cfg(test)]
mod tests;
