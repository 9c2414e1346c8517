//! The admin API's listeners: a Unix socket and an mTLS TCP listener.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};

use super::AdminService;

/// Maximum time a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin Unix socket with `mode`, replacing a stale socket file
/// left by a previous run. A path that exists and is not a socket is an
/// error, so a wrong setting never deletes a regular file.
///
/// The socket is bound under a temporary name, given its mode, then renamed
/// into place, so no one can connect while it still has the umask's mode.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| {
                format!("cannot remove stale admin socket `{}`: {e}", path.display())
            })?;
            tracing::info!(path = %path.display(), "removed stale admin socket");
        }
        Ok(_) => {
            return Err(format!(
                "admin socket path `{}` exists and is not a socket; remove it or choose another path",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect `{}`: {e}", path.display())),
    }

    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);

    let listener = UnixListener::bind(&temporary)
        .map_err(|e| format!("cannot bind admin socket `{}`: {e}", temporary.display()))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(format!(
            "cannot set up admin socket `{}` with mode {mode:o}: {e}",
            path.display()
        ));
    }
    Ok(listener)
}

/// Serves the admin API on a bound Unix socket until `shutdown` completes,
/// then removes the socket file.
pub async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    service: AdminService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(path = %path.display(), "admin socket started");
    let result = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::debug!(path = %path.display(), %error, "cannot remove admin socket");
    }
    tracing::info!(path = %path.display(), "admin socket stopped");
    result
}

/// Builds the admin listener's TLS configuration: the server's certificate
/// and key, and client certificates required and verified against `client_ca`.
pub fn server_tls_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certificates| certificates.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificate `{}`: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read private key `{}`: {e}", key_file.display()))?;

    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(client_ca_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read client CA `{}`: {e}", client_ca_file.display()))?;
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("invalid client CA in `{}`: {e}", client_ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "`{}` holds no certificate",
            client_ca_file.display()
        ));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("cannot set up client certificate verification: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("invalid admin certificate or key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the admin API over mTLS on a bound TCP listener until `shutdown`
/// completes. Handshakes run off the accept loop with a timeout, so a slow
/// client cannot hold up others.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: AdminService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let address = listener.local_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (sender, receiver) = tokio::sync::mpsc::channel::<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >(64);

    let accept_loop = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "admin TLS handshake failed");
                    }
                    Err(_) => tracing::info!(%peer, "admin TLS handshake timed out"),
                }
            });
        }
    });

    tracing::info!(?address, "admin mTLS listener started");
    let result = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(ReceiverStream::new(receiver), shutdown)
        .await;
    accept_loop.abort();
    tracing::info!(?address, "admin mTLS listener stopped");
    result
}
