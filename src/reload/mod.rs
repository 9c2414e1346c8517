//! Bundle delivery and reload: every source (a watched directory, a watched
//! `.tar.gz`, a polled bundle server, a push through the admin API) feeds
//! one activation pipeline that loads, verifies, compiles, tests and swaps.
//!
//! A rejected bundle leaves the active one in place and is logged, counted
//! and shown in the status API. See `docs/reload.md` for the formats and
//! options.

pub mod activation;
pub mod admin;
pub mod archive;
pub mod cli;
pub mod http;
pub mod signature;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use activation::{
    Activation, ActivationCounters, ActivationCounts, ActivationHook, Activator, LoadedBundle,
    RejectStage, Source,
};

use crate::config::{BundleSourceKind, Config};
use crate::spiffe::SpiffeId;
use crate::store::BundleStore;

/// The running sources and admin listeners; [`Reloader::stop`] ends them.
#[derive(Debug)]
pub struct Reloader {
    activator: Arc<Activator>,
    sources: Vec<JoinHandle<()>>,
    listeners: Vec<JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Reloader {
    pub fn activator(&self) -> &Arc<Activator> {
        &self.activator
    }

    /// Stops the sources and the admin listeners, which finish their calls
    /// in progress and remove their socket.
    pub async fn stop(self) {
        for source in &self.sources {
            source.abort();
        }
        self.shutdown.send_replace(true);
        for listener in self.listeners {
            let abort = listener.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), listener)
                .await
                .is_err()
            {
                tracing::warn!("admin listener did not stop within 5 s; aborting it");
                abort.abort();
            }
        }
        tracing::info!("bundle sources stopped");
    }
}

/// Starts the configured bundle source and admin listeners. Errors are
/// configuration errors found before anything starts, such as an unreadable
/// verification key or an admin socket that cannot be bound.
pub async fn start(
    config: &Config,
    store: Arc<BundleStore>,
    hook: Option<ActivationHook>,
    prepare: Option<activation::PrepareHook>,
) -> Result<Reloader, String> {
    let bundle = &config.bundle;
    let verifying_key = match &bundle.verification_key {
        Some(path) => {
            let key = signature::read_verifying_key(path)?;
            tracing::info!(key_id = signature::key_id(&key), path = %path.display(), "bundle signatures required");
            Some(key)
        }
        None => None,
    };
    let mut activator = Activator::new(store, verifying_key);
    if let Some(hook) = hook {
        activator = activator.with_hook(hook);
    }
    if let Some(prepare) = prepare {
        activator = activator.with_prepare(prepare);
    }
    let activator = Arc::new(activator);
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let mut sources = Vec::new();
    let mut listeners = Vec::new();

    let poll_interval = Duration::from_secs(bundle.poll_interval_secs.max(1));
    let watch_settings = watch::WatchSettings {
        debounce: Duration::from_millis(bundle.debounce_ms),
        check_interval: poll_interval,
    };
    match bundle.source {
        BundleSourceKind::Directory => {
            let source = watch::FileBundle::Directory(bundle.directory.clone());
            sources.push(tokio::spawn(watch::run(
                activator.clone(),
                source,
                watch_settings,
            )));
        }
        BundleSourceKind::Archive => {
            let Some(path) = &bundle.archive else {
                return Err(
                    "`bundle.source` is `archive` but `bundle.archive` is not set".to_owned(),
                );
            };
            let source = watch::FileBundle::Archive(path.clone());
            sources.push(tokio::spawn(watch::run(
                activator.clone(),
                source,
                watch_settings,
            )));
        }
        BundleSourceKind::Http => {
            let Some(url) = &bundle.url else {
                return Err("`bundle.source` is `http` but `bundle.url` is not set".to_owned());
            };
            let url = reqwest::Url::parse(url)
                .map_err(|e| format!("invalid `bundle.url` `{url}`: {e}"))?;
            let mut settings = http::HttpSettings::new(url);
            settings.poll_interval = poll_interval;
            settings.ca_file = bundle.ca_file.clone();
            settings.allow_plain_http = bundle.allow_plain_http;
            let source = http::HttpSource::new(settings)?;
            sources.push(tokio::spawn(source.run(activator.clone())));
        }
        BundleSourceKind::Push => {
            if config.admin_api.socket.is_none() && config.admin_api.tls.is_none() {
                return Err("`bundle.source` is `push` but the admin API is off; set `admin_api.socket` or `admin_api.tls`".to_owned());
            }
            tracing::info!("no bundle source; waiting for a push through the admin API");
        }
    }

    if let Some(path) = &config.admin_api.socket {
        let mode = u32::from_str_radix(config.admin_api.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                format!(
                    "invalid `admin_api.socket_mode` `{}`: use octal such as `0600`",
                    config.admin_api.socket_mode
                )
            })?;
        let listener = admin::listen::bind_unix(path, mode)?;
        let service = admin::AdminService::new(activator.clone(), admin::Callers::UnixSocket);
        let stop = shutdown_signal(&shutdown);
        let path = path.clone();
        listeners.push(tokio::spawn(async move {
            if let Err(error) = admin::listen::serve_unix(listener, path, service, stop).await {
                tracing::error!(error = error_chain(&error), "admin socket failed");
            }
        }));
    }

    if let Some(tls) = &config.admin_api.tls {
        let mut allowed = Vec::with_capacity(tls.allowed_ids.len());
        for id in &tls.allowed_ids {
            let id = SpiffeId::parse(id)
                .map_err(|e| format!("invalid `admin_api.tls.allowed_ids` entry `{id}`: {e}"))?;
            allowed.push(id);
        }
        if allowed.is_empty() {
            return Err(
                "`admin_api.tls.allowed_ids` is empty, so no caller could use the admin listener"
                    .to_owned(),
            );
        }
        let server_tls =
            admin::listen::server_tls_config(&tls.cert_file, &tls.key_file, &tls.client_ca_file)?;
        let listener = tokio::net::TcpListener::bind(tls.listen)
            .await
            .map_err(|e| format!("cannot bind the admin listener on {}: {e}", tls.listen))?;
        let service = admin::AdminService::new(
            activator.clone(),
            admin::Callers::SpiffeIds(Arc::new(allowed)),
        );
        let stop = shutdown_signal(&shutdown);
        listeners.push(tokio::spawn(async move {
            if let Err(error) = admin::listen::serve_tls(listener, server_tls, service, stop).await
            {
                tracing::error!(error = error_chain(&error), "admin mTLS listener failed");
            }
        }));
    }

    Ok(Reloader {
        activator,
        sources,
        listeners,
        shutdown,
    })
}

fn shutdown_signal(
    sender: &tokio::sync::watch::Sender<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut receiver = sender.subscribe();
    async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// Formats an error with its causes joined by `: `, skipping a cause whose
/// text the message already contains.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
