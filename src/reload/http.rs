//! The HTTP source: a bundle server (any object store or CDN) polled for a
//! `.tar.gz` with `If-None-Match`, so an unchanged bundle costs one 304.
//!
//! Polls are spread with ±20 % jitter so a fleet of sidecars does not poll in
//! step, and failures back off exponentially up to a maximum.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};

use super::activation::{Activator, Source};
use super::archive::{self, ArchiveLimits};
use super::error_chain;

/// Settings of the HTTP source.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: Url,
    /// Interval between polls while the server responds.
    pub poll_interval: Duration,
    /// Maximum delay between polls while the server fails.
    pub max_backoff: Duration,
    /// Timeout of one request, body included.
    pub timeout: Duration,
    /// PEM file of CA certificates for the server; the Mozilla roots from
    /// `webpki-roots` when `None`.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept `http://` URLs and redirects. Off by default, because without
    /// TLS anyone on the path can serve a bundle unless bundles are signed.
    pub allow_plain_http: bool,
}

impl HttpSettings {
    pub fn new(url: Url) -> Self {
        HttpSettings {
            url,
            poll_interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            ca_file: None,
            allow_plain_http: false,
        }
    }
}

/// Result of one poll.
enum Poll {
    NotModified,
    Fetched { body: Vec<u8>, etag: Option<String> },
}

/// The polling source; build it with [`HttpSource::new`], then [`HttpSource::run`].
#[derive(Debug)]
pub struct HttpSource {
    settings: HttpSettings,
    client: reqwest::Client,
    source: Source,
    etag: Option<String>,
}

impl HttpSource {
    /// Checks the settings and builds the HTTP client with rustls and the
    /// `ring` provider.
    pub fn new(settings: HttpSettings) -> Result<Self, String> {
        match settings.url.scheme() {
            "https" => {}
            "http" if settings.allow_plain_http => {}
            "http" => {
                return Err(format!(
                    "bundle URL `{}` uses plain HTTP; use https, or set `bundle.allow_plain_http: true` for signed bundles on a trusted network",
                    settings.url
                ));
            }
            other => {
                return Err(format!(
                    "bundle URL `{}` has unsupported scheme `{other}`; use https",
                    settings.url
                ));
            }
        }

        let tls = client_tls(settings.ca_file.as_deref())?;
        let allow_plain_http = settings.allow_plain_http;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().scheme() != "https" && !allow_plain_http {
                attempt.error("redirect to a URL without https")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(redirects)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("authzd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;

        Ok(HttpSource {
            source: Source::http(settings.url.as_str()),
            settings,
            client,
            etag: None,
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Polls until the task is dropped.
    pub async fn run(mut self, activator: Arc<Activator>) {
        let source = self.source.clone();
        tracing::info!(%source, poll_interval_ms = self.settings.poll_interval.as_millis() as u64, "bundle source started");
        let mut failures: u32 = 0;

        loop {
            match self.poll().await {
                Ok(poll) => {
                    if failures > 0 {
                        tracing::info!(%source, failures, "bundle server reachable again");
                    }
                    failures = 0;
                    self.handle(poll, &activator).await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures <= 3 {
                        tracing::warn!(%source, failures, error, "cannot fetch bundle; the active bundle stays");
                    } else {
                        tracing::debug!(%source, failures, error, "cannot fetch bundle; the active bundle stays");
                    }
                }
            }
            tokio::time::sleep(self.next_delay(failures)).await;
        }
    }

    async fn handle(&mut self, poll: Poll, activator: &Arc<Activator>) {
        let Poll::Fetched { body, etag } = poll else {
            tracing::debug!(source = %self.source, "bundle not modified");
            return;
        };
        activator
            .activate_in_background(self.source.clone(), move || {
                archive::read_archive(&body, &ArchiveLimits::default())
            })
            .await;
        // A rejected bundle keeps its ETag too: fetching the same bytes again
        // would only reject them again, and a new upload gets a new ETag.
        self.etag = etag;
    }

    async fn poll(&self) -> Result<Poll, String> {
        let mut request = self.client.get(self.settings.url.clone());
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(|e| error_chain(&e))?;

        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Poll::NotModified);
        }
        if !status.is_success() {
            return Err(format!("bundle server answered {status}"));
        }

        let limit = ArchiveLimits::default().max_compressed_bytes;
        if let Some(length) = response.content_length()
            && length > limit
        {
            return Err(format!("bundle is {length} bytes; the limit is {limit}"));
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);

        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(format!("bundle is over the limit of {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Poll::Fetched { body, etag })
    }

    /// Returns the poll interval, or after failures an exponential backoff
    /// capped at `max_backoff`, with ±20 % jitter.
    fn next_delay(&self, failures: u32) -> Duration {
        let base = self.settings.poll_interval;
        let delay = if failures == 0 {
            base
        } else {
            let factor = 2u32.saturating_pow(failures.min(16));
            base.saturating_mul(factor).min(self.settings.max_backoff)
        };
        delay.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

/// Builds the TLS client configuration with the `ring` provider, so no
/// second crypto provider is ever needed.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file `{}`: {e}", path.display()))?;
            for certificate in certificates {
                let certificate = certificate
                    .map_err(|e| format!("invalid CA file `{}`: {e}", path.display()))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("invalid CA certificate in `{}`: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("CA file `{}` holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
