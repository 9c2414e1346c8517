//! Overload: Checks past the in-flight limits are rejected at once with
//! RESOURCE_EXHAUSTED instead of queuing.
//!
//! Raw HTTP/2 streams that send a CheckRequest's headers and only part of
//! its body hold their place in flight, as slow or stuck clients do.

use std::sync::Arc;

use authzd::config::Config;
use authzd::policy::Bundle;
use authzd::server::run::{Runtime, run};
use authzd::store::BundleStore;
use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use prost::Message;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

struct Server {
    check: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(limits: &str) -> Server {
    let config = Config::parse(&format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\ndecision_log: {{output: none}}\nlimits: {limits}\n"
    ))
    .unwrap();
    let store = Arc::new(BundleStore::new());
    let bundle = Bundle::load_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example"),
    )
    .unwrap();
    store.activate(Arc::new(bundle));
    let mut runtime = Runtime::new(&config, store).unwrap();
    let (bound_sender, bound) = tokio::sync::oneshot::channel();
    runtime.on_bound = Some(bound_sender);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(&config, runtime, async {
            let _ = stopped.await;
        })
        .await
    });
    let bound = bound.await.unwrap();
    Server {
        check: bound.check.unwrap(),
        admin: bound.admin.unwrap(),
        _stop: stop,
    }
}

async fn h2_connection(address: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    sender.ready().await.unwrap()
}

fn grpc_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(CHECK_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Opens a stream that sends half a gRPC message and then waits.
async fn stall(
    sender: &mut h2::client::SendRequest<Bytes>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let (response, mut stream) = sender.send_request(grpc_request(), false).unwrap();
    // A gRPC frame header announcing 100 bytes, then 10 of them.
    let mut partial = vec![0u8, 0, 0, 0, 100];
    partial.extend_from_slice(&[0u8; 10]);
    stream.send_data(Bytes::from(partial), false).unwrap();
    (response, stream)
}

/// Sends a whole CheckRequest on a raw stream and returns its grpc-status.
async fn complete(sender: &mut h2::client::SendRequest<Bytes>) -> String {
    let message = CheckRequest::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let (response, mut stream) = sender.send_request(grpc_request(), false).unwrap();
    stream.send_data(Bytes::from(framed), true).unwrap();
    let response = response.await.unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn in_flight(admin: std::net::SocketAddr) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find(|line| line.starts_with("authzd_checks_in_flight "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(-1.0)
}

async fn wait_in_flight(admin: std::net::SocketAddr, expected: f64) {
    for _ in 0..500 {
        if in_flight(admin).await == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("in-flight Checks never reached {expected}");
}

#[tokio::test]
async fn total_limit_rejects_with_resource_exhausted() {
    let server = start("{max_in_flight: 3}").await;
    let mut stalled_connections = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut sender = h2_connection(server.check).await;
        stalled.push(stall(&mut sender).await);
        stalled_connections.push(sender);
    }
    wait_in_flight(server.admin, 3.0).await;

    let mut client = AuthorizationClient::connect(format!("http://{}", server.check))
        .await
        .unwrap();
    let refused = client.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    // Once the stalled clients go away, Checks are decided again.
    drop(stalled);
    drop(stalled_connections);
    wait_in_flight(server.admin, 0.0).await;
    let answered = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answered.status.map(|s| s.code),
        Some(7),
        "a malformed Check is denied, not refused"
    );
}

#[tokio::test]
async fn connection_limit_rejects_with_resource_exhausted() {
    let server = start("{max_concurrent_per_connection: 2}").await;
    let mut sender = h2_connection(server.check).await;
    let _first = stall(&mut sender).await;
    let _second = stall(&mut sender).await;
    wait_in_flight(server.admin, 2.0).await;

    let status = complete(&mut sender).await;
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED on the crowded connection");

    let mut other = h2_connection(server.check).await;
    assert_eq!(
        complete(&mut other).await,
        "0",
        "another connection is served"
    );
}
