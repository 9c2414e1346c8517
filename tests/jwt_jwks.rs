//! Remote JWKS: key rotation, endpoint outage and bundle swaps, against a
//! small HTTP server on 127.0.0.1.

mod jwt_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use authzd::jwt::KeyStatus;
use jwt_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A JWKS endpoint serving whatever document it currently holds.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: serde_json::Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("address"));
        let document = Arc::new(Mutex::new(document.to_string()));
        let served = document.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let body = served.lock().expect("document").clone();
                tokio::spawn(async move {
                    // Reads the request head; the body of a GET is empty.
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            document,
            task,
        }
    }

    fn serve(&self, document: serde_json::Value) {
        *self.document.lock().expect("document") = document.to_string();
    }

    /// Stops accepting connections and closes the listener.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn remote_manifest(revision: &str, url: &str, refresh: &str) -> String {
    manifest(
        revision,
        &format!("        url: {url}\n        refresh: {{{refresh}}}"),
    )
}

/// Polls the server's key status until `ready` holds, for at most 20 s.
async fn wait_for_status(server: &Server, ready: impl Fn(&KeyStatus) -> bool) -> KeyStatus {
    for _ in 0..400 {
        if let Some(status) = server.verifier.key_status().into_iter().find(|s| ready(s)) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "key status never reached the expected state: {:?}",
        server.verifier.key_status()
    );
}

/// Sends `token` until it is allowed, for at most 20 s.
async fn wait_until_allowed(server: &mut Server, token: &str) -> Outcome {
    let mut last = None;
    for _ in 0..400 {
        let outcome = server.check_token(token).await;
        if outcome.allowed() {
            return outcome;
        }
        last = Some(outcome);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("token never allowed; last outcome {last:?}");
}

#[tokio::test]
async fn key_rotation_without_restart() {
    let keys = keys();
    let jwks = JwksServer::start(jwks_of(&[&keys.k1])).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let manifest = remote_manifest(
        "r1",
        &jwks.url,
        "interval_seconds: 3600, unknown_kid_min_seconds: 1",
    );
    let bundle = write_bundle(dir.path(), &manifest, &[]).expect("bundle compiles");
    let mut server = start(bundle).await;

    let old = sign(&keys.k1, &claims());
    wait_until_allowed(&mut server, &old).await;
    let before = wait_for_status(&server, |s| s.keys == 1).await;

    // The issuer rotates: `k1` is withdrawn and `k2` published.
    let k2 = rsa_key("k2");
    jwks.serve(jwks_of(&[&k2]));
    let new = sign(&k2, &claims());
    let first = server.check_token(&new).await;
    assert!(
        first.allowed() || first.detail == "unknown_key",
        "{first:?}"
    );
    wait_until_allowed(&mut server, &new).await;

    let after = wait_for_status(&server, |s| s.generation > before.generation).await;
    assert_eq!(after.keys, 1);
    let withdrawn = server.check_token(&old).await;
    assert_eq!(withdrawn.status, 401, "{withdrawn:?}");
    assert_eq!(withdrawn.detail, "unknown_key");
}

#[tokio::test]
async fn jwks_outage_keeps_keys() {
    let keys = keys();
    let jwks = JwksServer::start(jwks_of(&[&keys.k1])).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let manifest = remote_manifest("r1", &jwks.url, "interval_seconds: 1");
    let bundle = write_bundle(dir.path(), &manifest, &[]).expect("bundle compiles");
    let mut server = start(bundle).await;

    let cached = sign(&keys.k1, &claims());
    wait_until_allowed(&mut server, &cached).await;

    jwks.stop().await;
    let failed = wait_for_status(&server, |s| s.consecutive_failures >= 1).await;
    assert_eq!(failed.keys, 1);

    assert!(server.check_token(&cached).await.allowed());
    // A token never seen before is verified with the kept keys, not the cache.
    let fresh = server.check_token(&sign(&keys.k1, &claims())).await;
    assert!(fresh.allowed(), "{fresh:?}");
}

#[tokio::test]
async fn bundle_swap_keeps_keys_and_cache() {
    let keys = keys();
    let jwks = JwksServer::start(jwks_of(&[&keys.k1])).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let refresh = "interval_seconds: 3600";
    let bundle = write_bundle(dir.path(), &remote_manifest("r1", &jwks.url, refresh), &[])
        .expect("bundle compiles");
    let mut server = start(bundle).await;

    let token = sign(&keys.k1, &claims());
    wait_until_allowed(&mut server, &token).await;
    let before = wait_for_status(&server, |s| s.keys == 1).await;
    assert_eq!(server.verifier.cached_tokens(), 1);

    // A new revision with the same providers reuses keys and cache.
    let next = tempfile::tempdir().expect("temporary directory");
    let bundle = write_bundle(next.path(), &remote_manifest("r2", &jwks.url, refresh), &[])
        .expect("bundle compiles");
    server.store.activate(Arc::new(bundle));
    let outcome = server.check_token(&token).await;
    assert!(outcome.allowed(), "{outcome:?}");
    let after = server.verifier.key_status();
    assert_eq!(after.first().map(|s| s.fetches), Some(before.fetches));
    assert_eq!(server.verifier.cached_tokens(), 1);

    // A changed audience list empties the cache for the provider.
    let changed = tempfile::tempdir().expect("temporary directory");
    let manifest = remote_manifest("r3", &jwks.url, refresh).replace(
        "audiences: [orders-api]",
        "audiences: [orders-api, billing-api]",
    );
    let bundle = write_bundle(changed.path(), &manifest, &[]).expect("bundle compiles");
    server.store.activate(Arc::new(bundle));
    let outcome = server.check_token(&token).await;
    assert!(outcome.allowed(), "{outcome:?}");
    let after = server.verifier.key_status();
    assert_eq!(after.first().map(|s| s.fetches), Some(before.fetches));
    assert_eq!(
        server.verifier.cached_tokens(),
        1,
        "only the re-verified token is cached"
    );
    drop(jwks);
}

fn jwks_of(keys: &[&TestKey]) -> serde_json::Value {
    jwks(keys)
}
