//! Running every listener of a configuration: Check over TCP (plain or
//! TLS) and a Unix socket, gRPC health on each, the admin HTTP listener, and
//! a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;

use super::overload::InFlightLimit;
use super::{AuthzService, authorization_service, grpc_server, nodelay_incoming};
use crate::admin_http::{self, AdminState, StatusSection};
use crate::config::Config;
use crate::engine::RequestLimits;
use crate::metrics::Metrics;
use crate::store::BundleStore;
use crate::tls::ReloadingTls;

/// gRPC health for every listener, following bundle activations: NOT_SERVING
/// until a first bundle is active, SERVING after.
pub struct Health {
    server: HealthServer<tonic_health::server::HealthService>,
    _watcher: tokio::task::JoinHandle<()>,
}

impl Health {
    /// Sets the initial status before returning, so no probe can see SERVING
    /// before a bundle is active.
    pub async fn start(store: Arc<BundleStore>) -> Health {
        let reporter = tonic_health::server::HealthReporter::new();
        let server = HealthServer::new(tonic_health::server::HealthService::from_health_reporter(
            reporter.clone(),
        ));
        let mut activations = store.subscribe();
        report_readiness(&reporter, &store).await;
        let watcher = tokio::spawn(async move {
            while activations.changed().await.is_ok() {
                report_readiness(&reporter, &store).await;
            }
        });
        Health {
            server,
            _watcher: watcher,
        }
    }

    pub fn service(&self) -> HealthServer<tonic_health::server::HealthService> {
        self.server.clone()
    }
}

async fn report_readiness(reporter: &tonic_health::server::HealthReporter, store: &BundleStore) {
    let status = if store.current().is_some() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    // The empty name is the server as a whole, which probes ask about.
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer<
                AuthzService,
            > as NamedService>::NAME,
            status,
        )
        .await;
}

/// The `jwks` section of `/status`: the fetch state of every key set.
#[derive(Debug)]
struct JwksStatus(Arc<crate::jwt::JwtVerifier>);

impl StatusSection for JwksStatus {
    fn sections(&self) -> serde_json::Map<String, serde_json::Value> {
        let sets: Vec<serde_json::Value> = self
            .0
            .key_status()
            .into_iter()
            .map(|status| {
                serde_json::json!({
                    "url": status.url,
                    "keys": status.keys,
                    "generation": status.generation,
                    "fetches": status.fetches,
                    "failures": status.failures,
                    "consecutive_failures": status.consecutive_failures,
                })
            })
            .collect();
        let mut sections = serde_json::Map::new();
        sections.insert("jwks".to_owned(), serde_json::Value::Array(sets));
        sections.insert(
            "cached_tokens".to_owned(),
            serde_json::Value::from(self.0.cached_tokens()),
        );
        sections
    }
}

/// Things `run` needs besides the configuration.
pub struct Runtime {
    pub store: Arc<BundleStore>,
    pub metrics: Arc<Metrics>,
    pub service: AuthzService,
    pub status_sections: Arc<dyn StatusSection>,
    /// The decision log writer thread, joined at stop so no line is lost.
    pub decision_log_writer: Option<std::thread::JoinHandle<()>>,
    /// Receives the bound addresses once every listener is bound, which
    /// lets a caller that configured port 0 learn where to connect.
    pub on_bound: Option<tokio::sync::oneshot::Sender<BoundAddresses>>,
}

/// The addresses the TCP listeners were bound to.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundAddresses {
    pub check: Option<std::net::SocketAddr>,
    pub admin: Option<std::net::SocketAddr>,
}

impl Runtime {
    /// Builds the runtime of a configuration: metrics, decision log and the
    /// Check service.
    pub fn new(config: &Config, store: Arc<BundleStore>) -> Result<Runtime, String> {
        let verifier = Arc::new(crate::jwt::JwtVerifier::default());
        let metrics = Arc::new(Metrics::with_collectors(vec![Box::new(
            crate::metrics::JwksCollector(verifier.clone()),
        )]));
        let (decision_log, decision_log_writer) =
            match crate::decision_log::DecisionLog::start(&config.decision_log, metrics.clone())? {
                Some((log, writer)) => (Some(log), Some(writer)),
                None => (None, None),
            };
        let limits = RequestLimits {
            max_headers: config.limits.max_headers,
            max_header_bytes: config.limits.max_header_bytes,
        };
        // Keys of remote JWKS are fetched from the start, not on the first Check.
        if let Some(bundle) = store.current() {
            verifier.prepare(&bundle);
        }
        let service = AuthzService::new(store.clone())
            .with_verifier(verifier.clone())
            .with_limits(limits)
            .with_metrics(metrics.clone())
            .with_decision_log(decision_log);
        Ok(Runtime {
            store,
            metrics,
            service,
            status_sections: Arc::new(JwksStatus(verifier)),
            decision_log_writer,
            on_bound: None,
        })
    }
}

/// Binds every configured listener and serves until `shutdown` completes,
/// then stops accepting and gives in-flight Checks
/// `shutdown_timeout_seconds` to finish.
pub async fn run(
    config: &Config,
    mut runtime: Runtime,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let (stop, stopped) = watch::channel(false);
    let mut bound = BoundAddresses::default();
    let health = Health::start(runtime.store.clone()).await;
    let per_connection = config.limits.max_concurrent_per_connection;
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(address) = config.listen {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot bind the check listener on {address}: {e}"))?;
        let address = listener.local_addr().unwrap_or(address);
        bound.check = Some(address);
        let router = grpc_server(per_connection)
            .add_service(health.service())
            .add_service(limited_service(&runtime, config));
        let signal = wait_for(stopped.clone());

        match &config.tls {
            None => {
                tracing::info!(%address, tls = false, "check listener started");
                let incoming = nodelay_incoming(listener);
                tasks.spawn(async move {
                    let result = router.serve_with_incoming_shutdown(incoming, signal).await;
                    tracing::info!(%address, "check listener stopped");
                    result.map_err(|e| format!("check listener on {address} failed: {e}"))
                });
            }
            Some(settings) => {
                let tls = ReloadingTls::load(settings.clone())?;
                let reloader = tls.spawn_reloader();
                tracing::info!(%address, tls = true, client_auth = settings.client_ca.is_some(), "check listener started");
                let incoming = tls_incoming(listener, tls, stopped.clone());
                tasks.spawn(async move {
                    let result = router.serve_with_incoming_shutdown(incoming, signal).await;
                    reloader.abort();
                    tracing::info!(%address, "check listener stopped");
                    result.map_err(|e| format!("check listener on {address} failed: {e}"))
                });
            }
        }
    }

    let mut socket_path = None;
    if let Some(socket) = &config.unix_socket {
        let listener = bind_unix(&socket.path, socket.mode_bits()?)?;
        socket_path = Some(socket.path.clone());
        let path = socket.path.display().to_string();
        tracing::info!(socket = %path, mode = %socket.mode, "check listener started");
        let router = grpc_server(per_connection)
            .add_service(health.service())
            .add_service(limited_service(&runtime, config));
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let signal = wait_for(stopped.clone());
        tasks.spawn(async move {
            let result = router.serve_with_incoming_shutdown(incoming, signal).await;
            tracing::info!(socket = %path, "check listener stopped");
            result.map_err(|e| format!("check listener on {path} failed: {e}"))
        });
    }

    if let Some(address) = config.admin.listen {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot bind the admin listener on {address}: {e}"))?;
        bound.admin = listener.local_addr().ok();
        let state = AdminState {
            store: runtime.store.clone(),
            metrics: runtime.metrics.clone(),
            status_sections: runtime.status_sections.clone(),
        };
        let signal = wait_for(stopped.clone());
        tasks.spawn(async move {
            admin_http::serve(listener, state, signal).await;
            Ok(())
        });
    }

    if let Some(on_bound) = runtime.on_bound.take() {
        let _ = on_bound.send(bound);
    }

    // Serve until a signal arrives or a listener fails.
    tokio::pin!(shutdown);
    let mut failure = None;
    tokio::select! {
        _ = &mut shutdown => tracing::info!("shutdown requested, draining in-flight checks"),
        Some(result) = tasks.join_next() => {
            failure = flatten(result).err();
        }
    }
    let _ = stop.send(true);

    let grace = Duration::from_secs(config.shutdown_timeout_seconds);
    let drained = tokio::time::timeout(grace, async {
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = flatten(result) {
                tracing::error!(%error, "listener failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout_seconds = grace.as_secs(),
            in_flight = runtime.metrics.checks_in_flight.get(),
            "in-flight checks did not finish before the shutdown timeout"
        );
        tasks.abort_all();
    }

    // Every listener is done, so dropping the service drops the last
    // decision log handle and the writer flushes and ends.
    drop(runtime.service);
    if let Some(writer) = runtime.decision_log_writer.take() {
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!("decision log writer did not finish within 5 seconds");
        }
    }

    if let Some(path) = socket_path {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(socket = %path.display(), %error, "cannot remove the socket file")
            }
        }
    }
    tracing::info!("listeners stopped");
    failure.map_or(Ok(()), Err)
}

fn flatten(result: Result<Result<(), String>, tokio::task::JoinError>) -> Result<(), String> {
    result.map_err(|e| format!("listener task failed: {e}"))?
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Wraps the Check service in the in-flight limit.
fn limited_service(
    runtime: &Runtime,
    config: &Config,
) -> InFlightLimit<
    envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer<
        AuthzService,
    >,
> {
    InFlightLimit::new(
        authorization_service(runtime.service.clone()),
        runtime.metrics.clone(),
        config.limits.max_in_flight,
    )
}

/// Binds a Unix socket, replacing a stale socket file left by a process that
/// is gone, but never one another process is still serving.
fn bind_unix(path: &std::path::Path, mode: u32) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(format!(
                "unix_socket.path: `{}` exists and is not a socket",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "unix_socket.path: another process is serving `{}`",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket `{}`: {e}", path.display()))?;
        tracing::info!(socket = %path.display(), "removed a stale socket file");
    }

    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot bind the socket `{}`: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of `{}`: {e}", path.display()))?;
    Ok(listener)
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop,
/// each with a timeout, so a slow client cannot stall others.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    stopped: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>,
> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let stop = wait_for(stopped);
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "check listener accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let timeout = tls.handshake_timeout();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
