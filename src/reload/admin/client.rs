//! Connecting to a running authzd's admin API, over its Unix socket or mTLS.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::proto::admin_client::AdminClient;
use crate::reload::archive::ArchiveLimits;
use crate::reload::error_chain;

/// The admin API's address and the client's credentials.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminTarget {
    /// Admin Unix socket of the running authzd.
    #[arg(long, conflicts_with = "address")]
    pub socket: Option<PathBuf>,
    /// Admin mTLS address, such as `https://authzd.example.org:9443`.
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    pub address: Option<String>,
    /// PEM CA certificates that the server's certificate must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate holding the operator's SPIFFE ID.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Name the server certificate must hold; the address's host by default.
    #[arg(long)]
    pub server_name: Option<String>,
}

/// Opens a client to the admin API named by `target`.
pub async fn connect(target: &AdminTarget) -> Result<AdminClient<Channel>, String> {
    let limit = ArchiveLimits::default().max_compressed_bytes as usize + 64 * 1024;
    let channel = match (&target.socket, &target.address) {
        (Some(path), _) => connect_unix(path.clone()).await?,
        (None, Some(address)) => connect_tls(target, address).await?,
        (None, None) => {
            return Err("give the admin API's `--socket PATH` or `--address URL`".to_owned());
        }
    };
    Ok(AdminClient::new(channel).max_encoding_message_size(limit))
}

async fn connect_unix(path: PathBuf) -> Result<Channel, String> {
    let display = path.display().to_string();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            format!(
                "cannot connect to admin socket `{display}`: {}",
                error_chain(&e)
            )
        })
}

async fn connect_tls(target: &AdminTarget, address: &str) -> Result<Channel, String> {
    let read = |path: &Option<PathBuf>, what: &str| -> Result<Vec<u8>, String> {
        let Some(path) = path else {
            return Err(format!("`--{what}` is required with `--address`"));
        };
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
    };
    let ca = read(&target.ca, "ca")?;
    let cert = read(&target.cert, "cert")?;
    let key = read(&target.key, "key")?;

    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    if let Some(name) = &target.server_name {
        tls = tls.domain_name(name.clone());
    }
    Endpoint::from_shared(address.to_owned())
        .map_err(|e| format!("invalid admin address `{address}`: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("cannot set up TLS: {}", error_chain(&e)))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to `{address}`: {}", error_chain(&e)))
}
