//! SIGTERM during a steady stream of Checks against the real binary: every
//! Check the server accepted is answered, and the server stops cleanly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Check;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Endpoint;

async fn connect_unix(path: &Path) -> Option<tonic::transport::Channel> {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .ok()?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_accepted_checks() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("authzd.sock");
    let log = dir.path().join("decisions.log");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: null\nadmin: {{listen: null}}\nunix_socket: {{path: {}}}\nbundle: {{directory: {}}}\ndecision_log: {{output: {}, allow_sample_rate: 1.0, queue_capacity: 1000000}}\n",
            socket.display(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example").display(),
            log.display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut channel = None;
    for _ in 0..500 {
        if socket.exists()
            && let Some(connected) = connect_unix(&socket).await
        {
            channel = Some(connected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let channel = channel.expect("authzd did not start listening");

    // The bundle is activated in the background after the listener starts.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut serving = false;
    for _ in 0..500 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.ok() == Some(1) {
            serving = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(serving, "authzd never reported SERVING");

    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = AuthorizationClient::new(channel.clone());
        let answered = answered.clone();
        clients.push(tokio::spawn(async move {
            let request = Check::new("GET", "shop.example.org", "/healthz").build();
            // Bounded by count; the loop ends at the first refused Check.
            for _ in 0..20_000 {
                match client.check(request.clone()).await {
                    Ok(response) => {
                        let status = response.into_inner().status.map_or(-1, |s| s.code);
                        assert_eq!(status, 0, "an accepted Check got a wrong answer");
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => return Some(status),
                }
            }
            None
        }));
    }

    for _ in 0..2_000 {
        if answered.load(Ordering::SeqCst) >= 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    for client in clients {
        if let Some(status) = client.await.unwrap() {
            // A Check sent after the GOAWAY fails in the client's transport
            // (connection refused or closed); authzd itself never answered it.
            assert!(
                std::error::Error::source(&status).is_some()
                    || matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Cancelled
                    ),
                "a refused Check must fail at the transport, got {status:?}"
            );
        }
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(
        output.status.success(),
        "exit status {:?}: {stdout}",
        output.status
    );
    assert!(stdout.contains("signal received"), "{stdout}");
    assert!(stdout.contains("authzd stopped"), "{stdout}");
    assert!(!socket.exists(), "socket file removed at stop");
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(
        logged,
        answered.load(Ordering::SeqCst),
        "every Check the server decided reached its client"
    );
}
