//! The admin HTTP listener: `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! It binds to 127.0.0.1 by default because status and metrics describe the
//! policy; expose it further only behind your own access control.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::store::BundleStore;

/// Shared state of the admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub store: Arc<BundleStore>,
    pub metrics: Arc<Metrics>,
    /// Extra JSON sections for `/status`, such as JWKS state, by name.
    pub status_sections: Arc<dyn StatusSection>,
}

/// A source of one part of `/status`.
pub trait StatusSection: Send + Sync + std::fmt::Debug {
    fn sections(&self) -> serde_json::Map<String, serde_json::Value>;
}

/// A status source with nothing to add.
#[derive(Debug)]
pub struct NoSections;

impl StatusSection for NoSections {
    fn sections(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// Serves admin HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let address = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    tracing::info!(%address, "admin listener started");
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin listener accept failed");
                continue;
            }
        };

        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &request)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
    tracing::info!(%address, "admin listener stopped");
}

fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.store.current().is_some() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no policy bundle is active\n",
                )
            }
        }
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/status" => json(StatusCode::OK, &status(state)),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Builds the `/status` document.
pub fn status(state: &AdminState) -> serde_json::Value {
    let (current, details) = state.store.snapshot();
    let bundle = current.map(|bundle| {
        serde_json::json!({
            "name": &*bundle.name,
            "revision": &*bundle.revision,
            "digest": &*bundle.digest,
            "rules": bundle.rules.len(),
            "source": details.source,
            "activated_at": details.activated_at.map(rfc3339),
        })
    });
    let rejection = details.last_rejection.map(|rejection| {
        serde_json::json!({
            "source": rejection.source,
            "at": rfc3339(rejection.at),
            "digest": rejection.digest,
            "errors": rejection.errors,
        })
    });

    let mut document = serde_json::json!({
        "ready": bundle.is_some(),
        "bundle": bundle,
        "last_rejection": rejection,
    });
    if let Some(object) = document.as_object_mut() {
        object.extend(state.status_sections.sections());
    }
    document
}

fn rfc3339(time: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
