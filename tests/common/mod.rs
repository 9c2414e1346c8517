//! Shared test support: a real authzd server on 127.0.0.1 and CheckRequest
//! builders.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use authzd::policy::Bundle;
use authzd::store::BundleStore;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::transport::Channel;

/// A running server; dropping it stops the server.
pub struct TestServer {
    pub address: SocketAddr,
    pub store: Arc<BundleStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with the bundle in `dir` active.
    pub async fn start(dir: &Path) -> TestServer {
        let bundle = Bundle::load_dir(dir).unwrap_or_else(|e| panic!("bundle {dir:?}: {e}"));
        let store = Arc::new(BundleStore::new());
        store.activate(Arc::new(bundle));
        TestServer::start_with_store(store).await
    }

    pub async fn start_with_store(store: Arc<BundleStore>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = store.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            authzd::server::serve_tcp(listener, serving, shutdown)
                .await
                .unwrap();
        });
        TestServer {
            address,
            store,
            stop: Some(stop),
        }
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        let endpoint = format!("http://{}", self.address);
        for _ in 0..50 {
            if let Ok(client) = AuthorizationClient::connect(endpoint.clone()).await {
                return client;
            }
            tokio::task::yield_now().await;
        }
        AuthorizationClient::connect(endpoint).await.unwrap()
    }
}

/// Writes a bundle directory from (relative path, content) pairs.
pub fn write_bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A CheckRequest as Envoy builds it: the raw path with its query, the
/// authority as host, and headers in the `headers` map.
#[derive(Debug, Clone)]
pub struct Check {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub principal: String,
    pub context_extensions: HashMap<String, String>,
}

impl Check {
    pub fn new(method: &str, host: &str, path: &str) -> Check {
        Check {
            method: method.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            headers: HashMap::new(),
            principal: String::new(),
            context_extensions: HashMap::new(),
        }
    }

    pub fn principal(mut self, principal: &str) -> Check {
        self.principal = principal.to_owned();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Check {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn extension(mut self, name: &str, value: &str) -> Check {
        self.context_extensions
            .insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn build(&self) -> CheckRequest {
        let mut headers = self.headers.clone();
        headers.insert(":method".to_owned(), self.method.clone());
        headers.insert(":path".to_owned(), self.path.clone());
        headers.insert(":authority".to_owned(), self.host.clone());
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: self.principal.clone(),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(HttpRequest {
                        id: "test-request".to_owned(),
                        method: self.method.clone(),
                        headers,
                        path: self.path.clone(),
                        host: self.host.clone(),
                        scheme: "https".to_owned(),
                        protocol: "HTTP/1.1".to_owned(),
                        ..Default::default()
                    }),
                }),
                context_extensions: self.context_extensions.clone(),
                ..Default::default()
            }),
        }
    }
}

/// The parts of a CheckResponse tests look at.
#[derive(Debug, Clone)]
pub struct Answer {
    pub grpc_code: i32,
    pub allowed: bool,
    pub http_status: u16,
    pub reason: String,
    pub rule: String,
    pub revision: String,
    pub decision_id: String,
    pub headers: HashMap<String, String>,
    pub headers_to_remove: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn from_response(response: CheckResponse) -> Answer {
        let field = |name: &str| {
            response
                .dynamic_metadata
                .as_ref()
                .and_then(|m| m.fields.get(name))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let grpc_code = response.status.as_ref().map_or(-1, |s| s.code);
        let mut headers = HashMap::new();
        let mut headers_to_remove = Vec::new();
        let (allowed, http_status, body) = match &response.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                for option in &ok.headers {
                    if let Some(h) = &option.header {
                        headers.insert(h.key.clone(), h.value.clone());
                    }
                }
                headers_to_remove = ok.headers_to_remove.clone();
                (true, 200, String::new())
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                for option in &denied.headers {
                    if let Some(h) = &option.header {
                        headers.insert(h.key.clone(), h.value.clone());
                    }
                }
                let status = denied.status.as_ref().map_or(0, |s| s.code as u16);
                (false, status, denied.body.clone())
            }
            _ => (false, 0, String::new()),
        };
        Answer {
            grpc_code,
            allowed: allowed && grpc_code == 0,
            http_status,
            reason: field("reason"),
            rule: field("rule"),
            revision: field("revision"),
            decision_id: field("decision_id"),
            headers,
            headers_to_remove,
            body,
        }
    }
}

/// Sends one Check and returns the answer; a gRPC error fails the test,
/// because Envoy would then apply its failure mode instead of the decision.
pub async fn check(client: &mut AuthorizationClient<Channel>, request: &Check) -> Answer {
    let response = client
        .check(request.build())
        .await
        .unwrap_or_else(|status| panic!("Check {request:?} failed at the transport: {status}"))
        .into_inner();
    Answer::from_response(response)
}
