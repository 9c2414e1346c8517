//! Running authzd as a sidecar: Unix socket, TLS with a SPIFFE allow-list,
//! certificate rotation, health and readiness, metrics, decision logs and
//! graceful shutdown, all against real listeners.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use authzd::config::Config;
use authzd::policy::Bundle;
use authzd::server::run::{BoundAddresses, Runtime, run};
use authzd::store::BundleStore;
use common::{Answer, Check};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const LEDGER: &str = "spiffe://example.org/ns/payments/sa/ledger";

fn example_bundle() -> Bundle {
    Bundle::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example")).unwrap()
}

/// A server started through `run` with a configuration text; dropping it
/// requests a graceful stop.
struct Running {
    bound: BoundAddresses,
    store: Arc<BundleStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Running {
    async fn start(config_text: &str, store: Arc<BundleStore>) -> Running {
        let config = Config::parse(config_text).unwrap();
        let mut runtime = Runtime::new(&config, store.clone()).unwrap();
        let (bound_sender, bound_receiver) = tokio::sync::oneshot::channel();
        runtime.on_bound = Some(bound_sender);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(&config, runtime, async {
                let _ = stopped.await;
            })
            .await
        });
        let bound = match bound_receiver.await {
            Ok(bound) => bound,
            Err(_) => panic!("server failed to start: {:?}", task.await),
        };
        Running {
            bound,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }

    fn admin(&self) -> std::net::SocketAddr {
        self.bound.admin.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn active_store() -> Arc<BundleStore> {
    let store = Arc::new(BundleStore::new());
    store.activate(Arc::new(example_bundle()));
    store
}

/// Sends `GET path` over HTTP/1.0 and returns (status, body).
async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn health_status(channel: Channel, service: &str) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test]
async fn unix_socket_serves_check() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("authzd.sock");
    // A stale socket file from a previous process must not block the start.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let config = format!(
        "listen: null\nadmin: {{listen: null}}\nunix_socket: {{path: {}, mode: \"0600\"}}\n",
        socket.display()
    );
    let server = Running::start(&config, active_store()).await;

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let path = socket.clone();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut client = AuthorizationClient::new(channel);
    let answer = common::check(
        &mut client,
        &Check::new("PUT", "ledger.internal", "/internal/x").principal(LEDGER),
    )
    .await;
    assert!(answer.allowed, "{answer:?}");

    server.stop().await.unwrap();
    assert!(!socket.exists(), "socket file removed at stop");
}

struct TlsFiles {
    dir: tempfile::TempDir,
    ca: pki::Ca,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Ca::new("authzd test CA");
        pki::write(dir.path(), "client-ca.pem", &ca.pem);
        let files = TlsFiles { dir, ca };
        files.issue_server_cert(&files.ca);
        files
    }

    fn issue_server_cert(&self, ca: &pki::Ca) {
        let (cert, key) = ca.leaf(
            &["localhost"],
            Some("spiffe://example.org/ns/authz/sa/authzd"),
        );
        // Write the key first and rename both into place, as cert-manager
        // or the SPIFFE helper would.
        pki::write(self.dir.path(), "server.key.tmp", &key);
        pki::write(self.dir.path(), "server.pem.tmp", &cert);
        std::fs::rename(self.path("server.key.tmp"), self.path("server.key")).unwrap();
        std::fs::rename(self.path("server.pem.tmp"), self.path("server.pem")).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: null}}\ntls:\n  cert: {}\n  key: {}\n  client_ca: {}\n  allowed_clients: [\"spiffe://example.org/ns/envoy/sa/*\"]\n  reload_interval_seconds: 1\n",
            self.path("server.pem").display(),
            self.path("server.key").display(),
            self.path("client-ca.pem").display(),
        )
    }
}

async fn tls_channel(
    address: std::net::SocketAddr,
    server_ca: &str,
    client: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::try_from(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_allow_list_admits_only_listed_clients() {
    let files = TlsFiles::new();
    let server = Running::start(&files.config(), active_store()).await;
    let address = server.bound.check.unwrap();
    let request = Check::new("PUT", "ledger.internal", "/internal/x").principal(LEDGER);

    let listed = files
        .ca
        .leaf(&[], Some("spiffe://example.org/ns/envoy/sa/sidecar"));
    let channel = tls_channel(address, &files.ca.pem, Some(listed))
        .await
        .unwrap();
    let answer = common::check(&mut AuthorizationClient::new(channel), &request).await;
    assert!(answer.allowed, "{answer:?}");

    let unlisted = files
        .ca
        .leaf(&[], Some("spiffe://example.org/ns/web/sa/frontend"));
    let refused = match tls_channel(address, &files.ca.pem, Some(unlisted)).await {
        Err(_) => true,
        Ok(channel) => AuthorizationClient::new(channel)
            .check(request.build())
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a client off the allow-list must not get a decision"
    );

    let anonymous = match tls_channel(address, &files.ca.pem, None).await {
        Err(_) => true,
        Ok(channel) => AuthorizationClient::new(channel)
            .check(request.build())
            .await
            .is_err(),
    };
    assert!(
        anonymous,
        "a client without a certificate must not get a decision"
    );

    let other_ca = pki::Ca::new("other CA");
    let foreign = other_ca.leaf(&[], Some("spiffe://example.org/ns/envoy/sa/sidecar"));
    let untrusted = match tls_channel(address, &files.ca.pem, Some(foreign)).await {
        Err(_) => true,
        Ok(channel) => AuthorizationClient::new(channel)
            .check(request.build())
            .await
            .is_err(),
    };
    assert!(
        untrusted,
        "a client certificate from another CA must be refused"
    );
}

#[tokio::test]
async fn rotated_certificate_is_served_without_restart() {
    let files = TlsFiles::new();
    let server = Running::start(&files.config(), active_store()).await;
    let address = server.bound.check.unwrap();
    let request = Check::new("PUT", "ledger.internal", "/internal/x").principal(LEDGER);
    let client_identity = files
        .ca
        .leaf(&[], Some("spiffe://example.org/ns/envoy/sa/sidecar"));

    let old_channel = tls_channel(address, &files.ca.pem, Some(client_identity.clone()))
        .await
        .unwrap();
    let mut old_client = AuthorizationClient::new(old_channel);
    assert!(common::check(&mut old_client, &request).await.allowed);

    // The new server certificate comes from a new CA, so a client that
    // trusts only the new CA connects once the rotation is picked up.
    let new_ca = pki::Ca::new("rotated CA");
    files.issue_server_cert(&new_ca);
    let mut rotated = None;
    for _ in 0..100 {
        if let Ok(channel) = tls_channel(address, &new_ca.pem, Some(client_identity.clone())).await
            && let Ok(response) = AuthorizationClient::new(channel)
                .check(request.build())
                .await
        {
            rotated = Some(Answer::from_response(response.into_inner()));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rotated = rotated.expect("the rotated certificate was never served");
    assert!(rotated.allowed);

    let still_open = common::check(&mut old_client, &request).await;
    assert!(
        still_open.allowed,
        "an open connection keeps working across the rotation"
    );
}

#[tokio::test]
async fn readiness_follows_first_bundle() {
    let store = Arc::new(BundleStore::new());
    let server = Running::start(
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n",
        store.clone(),
    )
    .await;
    let check_address = server.bound.check.unwrap();
    let channel = Endpoint::try_from(format!("http://{check_address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    assert_eq!(health_status(channel.clone(), "").await, NOT_SERVING);
    assert_eq!(
        health_status(channel.clone(), "envoy.service.auth.v3.Authorization").await,
        NOT_SERVING
    );
    assert_eq!(http_get(server.admin(), "/readyz").await.0, 503);
    assert_eq!(http_get(server.admin(), "/healthz").await.0, 200);
    let denied = common::check(
        &mut AuthorizationClient::new(channel.clone()),
        &Check::new("GET", "shop.example.org", "/healthz"),
    )
    .await;
    assert!(!denied.allowed);
    assert_eq!(denied.reason, "no_active_bundle");

    server.store.activate(Arc::new(example_bundle()));
    let mut status = NOT_SERVING;
    for _ in 0..200 {
        status = health_status(channel.clone(), "").await;
        if status == SERVING {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, SERVING);
    assert_eq!(http_get(server.admin(), "/readyz").await.0, 200);
    let (_, status_body) = http_get(server.admin(), "/status").await;
    let status_json: serde_json::Value = serde_json::from_str(&status_body).unwrap();
    assert_eq!(status_json["ready"], true);
    assert_eq!(status_json["bundle"]["revision"], "2026-12-04.1");
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_checks() {
    let server = Running::start(
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n",
        active_store(),
    )
    .await;
    let channel = Endpoint::try_from(format!("http://{}", server.bound.check.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AuthorizationClient::new(channel);
    let allow_series = "authzd_checks_total{decision=\"allow\",reason=\"allowed_by_rule\"}";
    let deny_series = "authzd_checks_total{decision=\"deny\",reason=\"path_encoded_slash\"}";

    let (status, before) = http_get(server.admin(), "/metrics").await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        common::check(
            &mut client,
            &Check::new("GET", "shop.example.org", "/healthz"),
        )
        .await;
    }
    common::check(
        &mut client,
        &Check::new("GET", "shop.example.org", "/a%2fb"),
    )
    .await;
    let (_, after) = http_get(server.admin(), "/metrics").await;

    assert_eq!(
        metric_value(&after, allow_series) - metric_value(&before, allow_series),
        3.0
    );
    assert_eq!(
        metric_value(&after, deny_series) - metric_value(&before, deny_series),
        1.0
    );
    assert!(
        metric_value(&after, "authzd_check_duration_seconds_count") >= 4.0,
        "{after}"
    );
    assert!(after.contains("authzd_checks_in_flight"), "{after}");
}

#[tokio::test]
async fn decision_log_never_contains_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let config = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: null}}\ndecision_log: {{output: {}, allow_sample_rate: 1.0, headers: [user-agent]}}\n",
        log.display()
    );
    let server = Running::start(&config, active_store()).await;
    let channel = Endpoint::try_from(format!("http://{}", server.bound.check.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AuthorizationClient::new(channel);
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXNlY3JldA";

    let allowed = Check::new(
        "GET",
        "shop.example.org",
        "/healthz?access_token=query-secret",
    )
    .header("authorization", &format!("Bearer {token}"))
    .header("cookie", "session=cookie-secret")
    .header("user-agent", "curl/8.0");
    let denied = Check::new("GET", "shop.example.org", "/admin?token=query-secret")
        .header("authorization", &format!("Bearer {token}"));
    let with_parameter = Check::new("GET", "shop.example.org", "/orders;jsessionid=param-secret");
    common::check(&mut client, &allowed).await;
    common::check(&mut client, &denied).await;
    common::check(&mut client, &with_parameter).await;

    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for secret in [
        token,
        "query-secret",
        "cookie-secret",
        "signature-secret",
        "param-secret",
    ] {
        assert!(
            !text.contains(secret),
            "decision log contains `{secret}`: {text}"
        );
    }
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["path"], "/healthz");
    assert_eq!(lines[0]["headers"]["user-agent"], "curl/8.0");
    assert_eq!(lines[0]["request_id"], "test-request");
    assert_eq!(lines[0]["revision"], "2026-12-04.1");
    assert!(lines[0]["latency_us"].is_u64());
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["rule"], "block-admin");
    assert_eq!(lines[1]["reason"], "denied_by_rule");
    assert_eq!(lines[1]["decision_id"].as_str().map(str::len), Some(32));
    assert_eq!(lines[2]["reason"], "path_parameter");
    assert_eq!(lines[2]["path"], "/orders");
}
