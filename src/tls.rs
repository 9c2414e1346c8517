//! TLS for gRPC listeners: certificates reloaded from disk, and optional
//! client certificates verified against a SPIFFE trust bundle with an
//! allow-list of caller SPIFFE IDs.
//!
//! The whole rustls `ServerConfig` is rebuilt when the certificate, key or
//! client CA file changes and swapped with `ArcSwap`; each new connection
//! uses the latest one, and open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::spiffe::SpiffeId;

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to clients, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to. When set,
    /// clients must present a certificate.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// SPIFFE IDs (or patterns with `*` and `**`) allowed to connect. Empty
    /// accepts any client certificate that verifies against `client_ca`.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// How often the files are checked for changes, in seconds.
    #[serde(default = "default_reload_interval")]
    pub reload_interval_seconds: u64,
    /// Maximum time a TLS handshake may take, in seconds.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
}

fn default_reload_interval() -> u64 {
    10
}

fn default_handshake_timeout() -> u64 {
    10
}

/// A TLS server configuration that follows its files on disk.
#[derive(Debug)]
pub struct ReloadingTls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
    fingerprint: std::sync::Mutex<[u8; 32]>,
}

impl ReloadingTls {
    /// Loads the files once; fails if they are missing or invalid.
    pub fn load(settings: TlsConfig) -> Result<Arc<Self>, String> {
        let (config, fingerprint) = build_config(&settings)?;
        Ok(Arc::new(ReloadingTls {
            settings,
            current: ArcSwap::from_pointee(config),
            fingerprint: std::sync::Mutex::new(fingerprint),
        }))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.handshake_timeout_seconds.max(1))
    }

    /// Reloads the files if their content changed. A failed reload keeps the
    /// previous configuration and is logged.
    pub fn reload_if_changed(&self) {
        let fingerprint = match files_fingerprint(&self.settings) {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                tracing::warn!(cert = %self.settings.cert.display(), %error, "TLS files unreadable, keeping the previous certificate");
                return;
            }
        };
        let Ok(mut previous) = self.fingerprint.lock() else {
            return;
        };
        if *previous == fingerprint {
            return;
        }
        match build_config(&self.settings) {
            Ok((config, fingerprint)) => {
                self.current.store(Arc::new(config));
                *previous = fingerprint;
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(cert = %self.settings.cert.display(), %error, "TLS reload failed, keeping the previous certificate");
            }
        }
    }

    /// Checks the files periodically until the task is dropped.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = Arc::clone(self);
        let interval = Duration::from_secs(self.settings.reload_interval_seconds.max(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                tls.reload_if_changed();
            }
        })
    }
}

fn files_fingerprint(settings: &TlsConfig) -> Result<[u8; 32], String> {
    let mut hasher = Sha256::new();
    let paths = [
        Some(&settings.cert),
        Some(&settings.key),
        settings.client_ca.as_ref(),
    ];
    for path in paths.into_iter().flatten() {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

fn build_config(settings: &TlsConfig) -> Result<(ServerConfig, [u8; 32]), String> {
    let fingerprint = files_fingerprint(settings)?;
    let chain = read_certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| format!("invalid private key `{}`: {e}", settings.key.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;

    let builder = match &settings.client_ca {
        None => {
            if !settings.allowed_clients.is_empty() {
                return Err(
                    "tls.allowed_clients needs tls.client_ca to verify client certificates"
                        .to_owned(),
                );
            }
            builder.with_no_client_auth()
        }
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca_path)? {
                roots.add(certificate).map_err(|e| {
                    format!("invalid CA certificate in `{}`: {e}", ca_path.display())
                })?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client verifier set-up failed: {e}"))?;
            let allowed = settings
                .allowed_clients
                .iter()
                .map(|text| {
                    crate::policy::pattern::PrincipalPattern::parse(text)
                        .map_err(|e| format!("tls.allowed_clients: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            builder.with_client_cert_verifier(Arc::new(SpiffeClientVerifier { inner, allowed }))
        }
    };

    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "invalid certificate or key `{}`: {e}",
            settings.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, fingerprint))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates `{}`: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid certificate in `{}`: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("no certificate in `{}`", path.display()));
    }
    Ok(certificates)
}

/// Returns the SPIFFE ID of a certificate: its only URI SAN, if that is a
/// valid SPIFFE ID.
pub fn spiffe_id_of(certificate: &CertificateDer<'_>) -> Option<SpiffeId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    SpiffeId::parse(uri).ok()
}

/// Verifies the chain with webpki, then requires the leaf's SPIFFE ID to be
/// on the allow-list, so a caller off the list fails the handshake.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<crate::policy::pattern::PrincipalPattern>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() {
            return Ok(verified);
        }
        let Some(id) = spiffe_id_of(end_entity) else {
            tracing::info!("TLS client rejected: certificate has no SPIFFE ID");
            return Err(rustls::Error::General(
                "client certificate has no SPIFFE ID".to_owned(),
            ));
        };
        if self.allowed.iter().any(|pattern| pattern.matches(&id)) {
            Ok(verified)
        } else {
            tracing::info!(client = %id, "TLS client rejected: SPIFFE ID not on the allow-list");
            Err(rustls::Error::General(format!(
                "client `{id}` is not allowed"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
