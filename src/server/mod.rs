//! The gRPC server: Envoy's Authorization service and gRPC health.

pub mod response;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::decision::{Decision, Reason};
use crate::engine::{self, Evaluation, RequestLimits, UserSource};
use crate::identity::Identities;
use crate::store::BundleStore;

/// Largest CheckRequest the server decodes. Envoy's `max_request_bytes`
/// bounds the body it forwards; this stays above any sensible setting so an
/// oversized request reaches the handler and gets a deny, never a gRPC error.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The Authorization service Envoy calls.
#[derive(Debug, Clone)]
pub struct AuthzService {
    store: Arc<BundleStore>,
    limits: RequestLimits,
}

impl AuthzService {
    pub fn new(store: Arc<BundleStore>) -> Self {
        AuthzService {
            store,
            limits: RequestLimits::default(),
        }
    }

    /// Decides one CheckRequest and builds the response. Synchronous: nothing
    /// on this path waits.
    pub fn check_now(&self, check: &CheckRequest) -> CheckResponse {
        let decision_id = uuid::Uuid::new_v4().simple().to_string();

        let evaluation = match self.store.current() {
            Some(bundle) => {
                engine::decide(&bundle, check, &UserSource::Anonymous, self.limits, None)
            }
            None => Evaluation {
                decision: Decision::deny(Reason::NoActiveBundle, "".into()),
                identities: Identities::default(),
            },
        };

        log_decision(&evaluation, check, &decision_id);
        let context = response::ResponseContext {
            decision_id: &decision_id,
            identities: &evaluation.identities,
            remove_headers: &[],
        };
        response::build(&evaluation.decision, &context)
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

fn log_decision(evaluation: &Evaluation, check: &CheckRequest, decision_id: &str) {
    let decision = &evaluation.decision;
    let request_id = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map_or("", |http| http.id.as_str());
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
            "check decided"
        );
    }
}

/// Builds the tonic server with explicit HTTP/2 limits, so a peer that
/// opens and resets streams in bulk cannot hold unbounded memory.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(1024))
        .http2_max_pending_accept_reset_streams(Some(256))
        .http2_max_local_error_reset_streams(Some(256))
        .http2_max_header_list_size(Some(64 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
}

/// The Authorization service wrapped for tonic, with the decode limit set.
pub fn authorization_service(store: Arc<BundleStore>) -> AuthorizationServer<AuthzService> {
    AuthorizationServer::new(AuthzService::new(store))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

/// Serves Check and gRPC health on a bound TCP listener until `shutdown`
/// completes.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    store: Arc<BundleStore>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let (reporter, health) = tonic_health::server::health_reporter();
    let status = if store.current().is_some() {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    // The empty name is the server as a whole, which probes ask about.
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <AuthorizationServer<AuthzService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;

    tracing::info!(address = ?local, "check listener started");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = grpc_server()
        .add_service(health)
        .add_service(authorization_service(store))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    tracing::info!(address = ?local, "check listener stopped");
    result
}
