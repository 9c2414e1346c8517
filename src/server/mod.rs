//! The gRPC server: Envoy's Authorization service and gRPC health.

pub mod overload;
pub mod response;
pub mod run;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::decision::{Decision, Reason};
use crate::decision_log::DecisionLog;
use crate::engine::{self, Evaluation, RequestLimits};
use crate::identity::Identities;
use crate::jwt::JwtVerifier;
use crate::metrics::Metrics;
use crate::store::BundleStore;

/// Largest CheckRequest the server decodes. Envoy's `max_request_bytes`
/// bounds the body it forwards, and this limit stays above any sensible
/// setting, so an oversized request reaches the handler and gets a deny
/// instead of a gRPC error.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The Authorization service Envoy calls.
#[derive(Debug, Clone)]
pub struct AuthzService {
    store: Arc<BundleStore>,
    limits: RequestLimits,
    metrics: Arc<Metrics>,
    decision_log: Option<DecisionLog>,
    /// Outlives bundle swaps, so keys and verified tokens carry over.
    jwt: Arc<JwtVerifier>,
}

impl AuthzService {
    pub fn new(store: Arc<BundleStore>) -> Self {
        AuthzService {
            store,
            limits: RequestLimits::default(),
            metrics: Arc::new(Metrics::new()),
            decision_log: None,
            jwt: Arc::new(JwtVerifier::default()),
        }
    }

    /// Sets the token verifier, for a caller that keeps it to read its key
    /// status or to prepare bundles before they are activated.
    pub fn with_verifier(mut self, jwt: Arc<JwtVerifier>) -> Self {
        self.jwt = jwt;
        self
    }

    pub fn verifier(&self) -> &Arc<JwtVerifier> {
        &self.jwt
    }

    /// Sets the limits a CheckRequest must respect.
    pub fn with_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_decision_log(mut self, decision_log: Option<DecisionLog>) -> Self {
        self.decision_log = decision_log;
        self
    }

    /// Decides one CheckRequest and builds the response. Synchronous: nothing
    /// on this path waits.
    pub fn check_now(&self, check: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let decision_id = uuid::Uuid::new_v4().simple().to_string();

        let mut authentication = crate::jwt::Authentication::default();
        let evaluation = match self.store.current() {
            Some(bundle) => {
                authentication = self.jwt.authenticate(&bundle, check);
                self.record_authentication(&authentication);
                engine::decide(&bundle, check, &authentication.user, self.limits, None)
            }
            None => Evaluation {
                decision: Decision::deny(Reason::NoActiveBundle, "".into()),
                identities: Identities::default(),
            },
        };

        let context = response::ResponseContext {
            decision_id: &decision_id,
            identities: &evaluation.identities,
            remove_headers: authentication.remove_headers(),
            // Only an allow response names headers to remove, so a deny
            // skips reading the request headers again.
            sent_identity_headers: evaluation.decision.allowed
                && check
                    .attributes
                    .as_ref()
                    .and_then(|a| a.request.as_ref())
                    .and_then(|r| r.http.as_ref())
                    .is_some_and(|http| {
                        response::has_identity_headers(&crate::request::Headers::from_http(http))
                    }),
        };
        let response = response::build(&evaluation.decision, &context);

        let latency = started.elapsed();
        self.record(&evaluation, check, &decision_id, latency);
        response
    }

    /// Counts a token verification; an anonymous request counts nothing.
    fn record_authentication(&self, authentication: &crate::jwt::Authentication) {
        match &authentication.user {
            engine::UserSource::Anonymous => {}
            engine::UserSource::Verified(_) if authentication.cache_hit => {
                self.metrics.jwt_cache_hits.inc();
                self.metrics.record_jwt("valid");
            }
            engine::UserSource::Verified(_) => self.metrics.record_jwt("valid"),
            engine::UserSource::Rejected(error) => self.metrics.record_jwt(error.as_str()),
        }
    }

    /// Counts, traces and logs one decision.
    fn record(
        &self,
        evaluation: &Evaluation,
        check: &CheckRequest,
        decision_id: &str,
        latency: std::time::Duration,
    ) {
        let decision = &evaluation.decision;
        self.metrics.record_check(decision.allowed, decision.reason);
        self.metrics.check_latency.observe(latency);

        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        log_decision(evaluation, http.map_or("", |h| h.id.as_str()), decision_id);
        if let Some(decision_log) = &self.decision_log {
            decision_log.record(decision, decision_id, &evaluation.identities, http, latency);
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let check = request.into_inner();
        Ok(Response::new(self.check_now(&check)))
    }
}

fn log_decision(evaluation: &Evaluation, request_id: &str, decision_id: &str) {
    let decision = &evaluation.decision;
    let workload = evaluation
        .identities
        .workload
        .as_ref()
        .map_or("", |w| w.as_str());
    let subject = evaluation
        .identities
        .user
        .as_ref()
        .map_or("", |u| u.subject.as_str());
    let rule = decision.rule.as_deref().unwrap_or("");
    let detail = decision.detail.as_deref().unwrap_or("");

    if decision.allowed {
        tracing::debug!(
            decision = "allow",
            decision_id,
            request_id,
            rule,
            reason = decision.reason.as_str(),
            revision = &*decision.revision,
            workload,
            subject,
            "check decided"
        );
    } else {
        tracing::info!(
            decision = "deny",
            decision_id,
            request_id,
            rule,
            reason = decision.reason.as_str(),
            revision = &*decision.revision,
            workload,
            subject,
            detail,
            "check decided"
        );
    }
}

/// Builds the tonic server with explicit HTTP/2 limits, so a peer that
/// opens and resets streams in bulk cannot hold unbounded memory.
pub fn grpc_server(max_concurrent_per_connection: usize) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(max_concurrent_per_connection)
        .load_shed(true)
        .max_concurrent_streams(Some(1024))
        .http2_max_pending_accept_reset_streams(Some(256))
        .http2_max_local_error_reset_streams(Some(256))
        .http2_max_header_list_size(Some(64 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
}

/// Accepted TCP connections with Nagle's algorithm off. tonic sets
/// `TCP_NODELAY` only on listeners it binds itself, and without it small
/// gRPC responses wait for delayed acknowledgements (about 40 ms on Linux).
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;

    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(error) = stream.set_nodelay(true)
        {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        accepted
    })
}

/// Wraps the Authorization service for tonic, with the decode limit set.
pub fn authorization_service(service: AuthzService) -> AuthorizationServer<AuthzService> {
    AuthorizationServer::new(service).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// Serves Check and gRPC health on a bound TCP listener with default
/// settings until `shutdown` completes.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    store: Arc<BundleStore>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_tcp_with(listener, AuthzService::new(store), shutdown).await
}

/// Serves Check with a service built by the caller, such as one whose token
/// verifier the caller keeps, until `shutdown` completes.
pub async fn serve_tcp_with(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let store = service.store.clone();
    if let Some(bundle) = store.current() {
        // Starts fetching remote keys before the first Check arrives.
        service.jwt.prepare(&bundle);
    }
    let health = run::Health::start(store).await;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?local, "check listener started");
    let incoming = nodelay_incoming(listener);
    let result = grpc_server(1024)
        .add_service(health.service())
        .add_service(authorization_service(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    tracing::info!(address = ?local, "check listener stopped");
    result
}
