//! Bounded concurrency across all connections.
//!
//! A Check counts as in flight from the moment its HTTP/2 stream reaches the
//! service until its response is ready, which includes receiving the request
//! body. Past the limit a Check is rejected at once with RESOURCE_EXHAUSTED,
//! so Envoy can retry or apply its failure mode instead of waiting out its
//! timeout in a queue.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::metrics::Metrics;

/// Wraps a gRPC service with a limit on Checks in flight.
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    metrics: Arc<Metrics>,
    max: i64,
}

impl<S> InFlightLimit<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>, max: usize) -> Self {
        InFlightLimit {
            inner,
            metrics,
            max: i64::try_from(max).unwrap_or(i64::MAX),
        }
    }
}

impl<S: NamedService> NamedService for InFlightLimit<S> {
    const NAME: &'static str = S::NAME;
}

/// Decrements the in-flight gauge when a Check ends, however it ends.
struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.checks_in_flight.dec();
    }
}

impl<S> Service<http::Request<Body>> for InFlightLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let previous = self.metrics.checks_in_flight.inc();
        let guard = InFlight(self.metrics.clone());
        if previous >= self.max {
            drop(guard);
            self.metrics.checks_rejected_overload.inc();
            let status = tonic::Status::resource_exhausted("too many checks in flight");
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }

        let response = self.inner.call(request);
        Box::pin(async move {
            let _guard = guard;
            response.await
        })
    }
}
