//! The workload of a request, resolved from `source.principal`,
//! `source.certificate` and, where the bundle trusts it, the
//! `x-forwarded-client-cert` header.
//!
//! The rules, in order:
//!
//! 1. The direct peer. `source.certificate`, when present, decides: its
//!    X.509-SVID rules and, where the trust domain has a trust bundle, its
//!    chain and validity period are checked. `source.principal` must then
//!    name the same SPIFFE ID, or the request is denied with
//!    `principal_mismatch`. A principal next to a certificate that carries no
//!    SPIFFE ID is a mismatch too, because Envoy falls back to a DNS SAN or
//!    the subject for the principal. Without a certificate, the principal
//!    alone is the peer's identity, as Envoy verified the TLS handshake.
//! 2. The forwarded client. Only with `trust_forwarded_client_cert`, the last
//!    XFCC element (the one added nearest to this Envoy) replaces the peer's
//!    identity. When the peer has an identity, the element must either
//!    describe the peer itself or carry the peer's ID in `By`, so a peer can
//!    only vouch for clients it received itself.
//! 3. Trust domains. When the bundle lists trust domains, a peer or a
//!    forwarded client from any other trust domain is denied with
//!    `untrusted_trust_domain`, never treated as anonymous: a caller proving
//!    an identity the bundle does not trust is not let in as "nobody".
//!
//! Everything the hot path reads (trust anchors included) is parsed once,
//! when the bundle is compiled.

use rustls::pki_types::{TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};

use super::x509::{self, CertificateChain, CertificateError};
use super::xfcc::{self, XfccElement};
use crate::decision::Reason;
use crate::policy::compile::MANIFEST_FILE;
use crate::policy::model::WorkloadSpec;
use crate::request::RequestFacts;
use crate::spiffe::{SpiffeId, TrustDomain};

/// A deny caused by the workload identity sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub reason: Reason,
    /// Operator-facing detail. It names SPIFFE IDs and trust domains, never
    /// certificate contents.
    pub detail: String,
}

impl IdentityError {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        IdentityError {
            reason,
            detail: detail.into(),
        }
    }

    fn certificate(source: &str, error: CertificateError) -> Self {
        IdentityError::new(error.reason(), format!("{source}: {error}"))
    }
}

/// The check applied to the certificates of one trust domain.
#[derive(Debug, Clone)]
enum Verification {
    /// The chain must lead to one of these CA certificates.
    TrustBundle(Vec<TrustAnchor<'static>>),
    /// Certificates are accepted on their X.509-SVID rules alone, because the
    /// manifest sets `allow_unverified_certificates`.
    Unverified,
    /// No trust bundle and no explicit permission: every certificate of the
    /// trust domain is rejected. A principal alone is still accepted.
    Missing,
}

#[derive(Debug, Clone)]
struct TrustedDomain {
    name: TrustDomain,
    verification: Verification,
}

/// The compiled `workloads` section of a bundle manifest.
#[derive(Debug, Clone, Default)]
pub struct WorkloadPolicy {
    /// Empty when the manifest lists no trust domain: then any trust domain
    /// is accepted and certificate chains are left to Envoy.
    trust_domains: Vec<TrustedDomain>,
    trust_forwarded_client_cert: bool,
}

impl WorkloadPolicy {
    /// Compiles the manifest's `workloads` section, pushing one message per
    /// problem onto `errors`.
    pub fn compile(spec: &WorkloadSpec, errors: &mut Vec<String>) -> WorkloadPolicy {
        let mut trust_domains: Vec<TrustedDomain> = Vec::with_capacity(spec.trust_domains.len());

        for entry in &spec.trust_domains {
            let context = format!("{MANIFEST_FILE}: workloads: trust domain `{}`", entry.name);
            let name = match TrustDomain::parse(&entry.name) {
                Ok(name) if !entry.name.contains("://") => name,
                Ok(_) => {
                    errors.push(format!(
                        "{context}: write the bare trust domain name, without `spiffe://` or a path"
                    ));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{context}: {e}"));
                    continue;
                }
            };
            if trust_domains.iter().any(|d| d.name == name) {
                errors.push(format!("{context}: listed twice"));
                continue;
            }

            let verification = match (&entry.ca_pem, entry.allow_unverified_certificates) {
                (Some(_), true) => {
                    errors.push(format!(
                        "{context}: `ca_pem` and `allow_unverified_certificates` exclude each other"
                    ));
                    continue;
                }
                (Some(pem), false) => match x509::trust_anchors_from_pem(pem) {
                    Ok(anchors) => Verification::TrustBundle(anchors),
                    Err(e) => {
                        errors.push(format!("{context}: `ca_pem` {e}"));
                        continue;
                    }
                },
                (None, true) => Verification::Unverified,
                (None, false) => Verification::Missing,
            };
            trust_domains.push(TrustedDomain { name, verification });
        }

        WorkloadPolicy {
            trust_domains,
            trust_forwarded_client_cert: spec.trust_forwarded_client_cert,
        }
    }

    pub fn trusts_forwarded_client_cert(&self) -> bool {
        self.trust_forwarded_client_cert
    }

    /// Resolves the workload of a request at time `now`. `Ok(None)` means no
    /// workload identity; an error means the request must be denied.
    pub fn resolve(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, IdentityError> {
        let peer = self.peer_identity(facts.source_principal, facts.source_certificate, now)?;
        if !self.trust_forwarded_client_cert {
            return Ok(peer);
        }
        match facts.headers.get(xfcc::HEADER) {
            Some(header) => self.forwarded_identity(&header, peer.as_ref(), now),
            None => Ok(peer),
        }
    }

    /// Resolves the identity of the direct peer from `source.principal` and
    /// `source.certificate`.
    fn peer_identity(
        &self,
        principal: &str,
        certificate: &str,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, IdentityError> {
        let from_certificate = if certificate.is_empty() {
            None
        } else {
            let chain = CertificateChain::from_url_encoded_pem(certificate)
                .map_err(|e| IdentityError::certificate("source certificate", e))?;
            Some(self.certificate_identity(&chain, "source certificate", now)?)
        };

        let from_principal = if principal.is_empty() {
            None
        } else {
            let id = SpiffeId::parse(principal).map_err(|e| {
                IdentityError::new(Reason::InvalidPrincipal, format!("source principal: {e}"))
            })?;
            Some(id)
        };

        match (from_certificate, from_principal) {
            (None, None) => Ok(None),
            (None, Some(principal)) => {
                self.check_trust_domain(&principal, "source principal")?;
                Ok(Some(principal))
            }
            (Some(certified), None) => Ok(certified),
            (Some(Some(certified)), Some(principal)) if certified == principal => {
                Ok(Some(certified))
            }
            (Some(certified), Some(principal)) => Err(IdentityError::new(
                Reason::PrincipalMismatch,
                match certified {
                    Some(certified) => format!(
                        "source principal `{principal}` differs from the certificate's SPIFFE ID `{certified}`"
                    ),
                    None => format!(
                        "source principal `{principal}` is not the URI SAN of an X.509-SVID in the source certificate"
                    ),
                },
            )),
        }
    }

    /// Resolves the identity of the client that the last XFCC element
    /// describes.
    fn forwarded_identity(
        &self,
        header: &str,
        peer: Option<&SpiffeId>,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, IdentityError> {
        const SOURCE: &str = "x-forwarded-client-cert";

        let elements = xfcc::parse(header).map_err(|e| {
            IdentityError::new(Reason::InvalidCertificate, format!("{SOURCE}: {e}"))
        })?;
        let Some(element) = elements.last() else {
            return Err(IdentityError::new(
                Reason::InvalidCertificate,
                format!("{SOURCE}: the header has no element"),
            ));
        };

        let forwarded = self.element_identity(element, now)?;

        if let Some(peer) = peer {
            let describes_peer = forwarded.as_ref() == Some(peer);
            let added_by_peer = element.by().any(|by| by == peer.as_str());
            if !describes_peer && !added_by_peer {
                return Err(IdentityError::new(
                    Reason::PrincipalMismatch,
                    format!(
                        "{SOURCE}: the last element neither describes the peer `{peer}` nor was added by it (`By`)"
                    ),
                ));
            }
        }
        Ok(forwarded)
    }

    /// Reads the SPIFFE ID of one XFCC element. A `Cert` (or, without it, the
    /// leaf of `Chain`) goes through the same checks as `source.certificate`,
    /// and its `Hash` and `URI` must agree with it. Without a certificate,
    /// the single `URI` is taken as Envoy wrote it. `DNS` never yields an ID.
    fn element_identity(
        &self,
        element: &XfccElement<'_>,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, IdentityError> {
        const SOURCE: &str = "x-forwarded-client-cert certificate";

        let from_uri = uri_identity(element)?;

        let chain = match (element.cert(), element.chain()) {
            (None, None) => None,
            (Some(cert), chain) => {
                let mut leaf = CertificateChain::from_url_encoded_pem(cert)
                    .map_err(|e| IdentityError::certificate(SOURCE, e))?;
                if let Some(chain) = chain {
                    let full = CertificateChain::from_url_encoded_pem(chain)
                        .map_err(|e| IdentityError::certificate(SOURCE, e))?;
                    if !leaf.adopt_intermediates(full) {
                        return Err(IdentityError::new(
                            Reason::InvalidCertificate,
                            "x-forwarded-client-cert: `Chain` does not start with `Cert`",
                        ));
                    }
                }
                Some(leaf)
            }
            (None, Some(chain)) => Some(
                CertificateChain::from_url_encoded_pem(chain)
                    .map_err(|e| IdentityError::certificate(SOURCE, e))?,
            ),
        };

        let Some(chain) = chain else {
            if let Some(id) = &from_uri {
                self.check_trust_domain(id, "x-forwarded-client-cert")?;
            }
            return Ok(from_uri);
        };

        if let Some(hash) = element.hash() {
            let digest = Sha256::digest(chain.leaf());
            if !hex_equals(hash, &digest) {
                return Err(IdentityError::new(
                    Reason::InvalidCertificate,
                    "x-forwarded-client-cert: `Hash` is not the SHA-256 digest of the certificate",
                ));
            }
        }

        let certified = self.certificate_identity(&chain, SOURCE, now)?;
        if from_uri.is_some() && from_uri != certified {
            return Err(IdentityError::new(
                Reason::PrincipalMismatch,
                "x-forwarded-client-cert: `URI` differs from the certificate's SPIFFE ID",
            ));
        }
        Ok(certified)
    }

    /// Reads the SPIFFE ID of a certificate chain and verifies the chain as
    /// its trust domain requires.
    fn certificate_identity(
        &self,
        chain: &CertificateChain,
        source: &str,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, IdentityError> {
        let Some(id) = chain
            .spiffe_id()
            .map_err(|e| IdentityError::certificate(source, e))?
        else {
            return Ok(None);
        };

        let Some(domain) = self.check_trust_domain(&id, source)? else {
            // No trust domain is listed: Envoy's TLS validation is all there is.
            return Ok(Some(id));
        };
        match &domain.verification {
            Verification::TrustBundle(anchors) => chain
                .verify(anchors, now)
                .map_err(|e| IdentityError::certificate(source, e))?,
            Verification::Unverified => {}
            Verification::Missing => {
                return Err(IdentityError::new(
                    Reason::UntrustedCertificate,
                    format!(
                        "{source}: trust domain `{}` has no `ca_pem`; add its CA certificates or set `allow_unverified_certificates`",
                        domain.name
                    ),
                ));
            }
        }
        Ok(Some(id))
    }

    /// Checks that the bundle trusts the trust domain of `id`. Returns the
    /// trust domain's entry, or `None` when the bundle lists none.
    fn check_trust_domain(
        &self,
        id: &SpiffeId,
        source: &str,
    ) -> Result<Option<&TrustedDomain>, IdentityError> {
        if self.trust_domains.is_empty() {
            return Ok(None);
        }
        match self
            .trust_domains
            .iter()
            .find(|domain| domain.name.as_str() == id.trust_domain())
        {
            Some(domain) => Ok(Some(domain)),
            None => Err(IdentityError::new(
                Reason::UntrustedTrustDomain,
                format!(
                    "{source}: trust domain `{}` of `{id}` is not listed under `workloads.trust_domains`",
                    id.trust_domain()
                ),
            )),
        }
    }
}

/// Reads the SPIFFE ID from an element's `URI` values with the X.509-SVID
/// rule: when one of them has the `spiffe` scheme, it must be the only one.
fn uri_identity(element: &XfccElement<'_>) -> Result<Option<SpiffeId>, IdentityError> {
    let count = element.uris().count();
    let Some(uri) = element.uris().find(|uri| {
        uri.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
    }) else {
        return Ok(None);
    };
    if count != 1 {
        return Err(IdentityError::new(
            Reason::InvalidCertificate,
            format!(
                "x-forwarded-client-cert: the last element has {count} `URI` values; an X.509-SVID has exactly one"
            ),
        ));
    }
    SpiffeId::parse(uri).map(Some).map_err(|e| {
        IdentityError::new(
            Reason::InvalidCertificate,
            format!("x-forwarded-client-cert: `URI` is not a valid SPIFFE ID: {e}"),
        )
    })
}

/// Compares a hex string, in either case, with bytes.
fn hex_equals(hex: &str, bytes: &[u8]) -> bool {
    let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.eq_ignore_ascii_case(&expected)
}

#[cfg(test)]
mod tests;
