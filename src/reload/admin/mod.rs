//! authzd's gRPC admin API (`authzd.admin.v1.Admin`): push a bundle, read
//! the status. Served on a Unix socket, where the socket's file mode decides
//! who may call, or on an mTLS listener, where the caller's SPIFFE ID must be
//! on an allow-list. Never served on the Check listener.

pub mod client;
pub mod listen;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::activation::{Activation, Activator, Source};
use super::archive::{self, ArchiveLimits};
use crate::spiffe::SpiffeId;
use crate::store::Rejection;

/// Generated types and stubs of `proto/authzd/admin/v1/admin.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("authzd.admin.v1");
}

use proto::admin_server::{Admin, AdminServer};
use proto::push_bundle_response::Result as PushResult;

/// The callers a listener admits.
#[derive(Debug, Clone)]
pub enum Callers {
    /// Anyone who can open the Unix socket; its file mode is the access control.
    UnixSocket,
    /// Clients whose verified certificate contains one of these SPIFFE IDs.
    SpiffeIds(Arc<Vec<SpiffeId>>),
}

/// The admin service for one listener.
#[derive(Debug, Clone)]
pub struct AdminService {
    activator: Arc<Activator>,
    callers: Callers,
}

impl AdminService {
    pub fn new(activator: Arc<Activator>, callers: Callers) -> Self {
        AdminService { activator, callers }
    }

    /// Wraps the service for tonic, accepting archives up to the archive
    /// size limit.
    pub fn into_server(self) -> AdminServer<AdminService> {
        let limit = ArchiveLimits::default().max_compressed_bytes as usize + 64 * 1024;
        AdminServer::new(self).max_decoding_message_size(limit)
    }

    /// Returns the caller's name for logs and the push source, or the status
    /// to return to a caller that is not allowed.
    fn authorize<T>(&self, request: &Request<T>, method: &str) -> Result<String, Status> {
        let allowed = match &self.callers {
            Callers::UnixSocket => return Ok("unix".to_owned()),
            Callers::SpiffeIds(allowed) => allowed,
        };
        let Some(certificates) = request.peer_certs() else {
            return Err(Status::unauthenticated("a client certificate is required"));
        };
        let Some(leaf) = certificates.first() else {
            return Err(Status::unauthenticated("a client certificate is required"));
        };
        let id = match spiffe_id_of(leaf.as_ref()) {
            Ok(id) => id,
            Err(problem) => {
                tracing::warn!(method, problem, "admin call denied");
                return Err(Status::permission_denied(problem));
            }
        };
        if !allowed.contains(&id) {
            tracing::warn!(
                method,
                caller = id.as_str(),
                "admin call denied: caller not on the allow-list"
            );
            return Err(Status::permission_denied(format!(
                "caller `{id}` is not on the admin allow-list"
            )));
        }
        Ok(id.as_str().to_owned())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn push_bundle(
        &self,
        request: Request<proto::PushBundleRequest>,
    ) -> Result<Response<proto::PushBundleResponse>, Status> {
        let caller = self.authorize(&request, "PushBundle")?;
        let archive = request.into_inner().archive;
        let source = Source::push(&caller);
        tracing::info!(%source, bytes = archive.len(), "bundle pushed");

        let activation = self
            .activator
            .activate_in_background(source, move || {
                archive::read_archive(&archive, &ArchiveLimits::default())
            })
            .await;
        Ok(Response::new(push_response(activation)))
    }

    async fn get_status(
        &self,
        request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        self.authorize(&request, "GetStatus")?;
        let store = self.activator.store();

        let (current, details) = store.snapshot();
        let active = current.map(|bundle| proto::ActiveBundle {
            name: bundle.name.to_string(),
            revision: bundle.revision.to_string(),
            digest: bundle.digest.to_string(),
            source: details.source.clone(),
            loaded_at: details.activated_at.map(timestamp),
            rules: bundle.rules.len() as u64,
        });
        let last_rejection = details.last_rejection.as_ref().map(rejection);
        let counts = self.activator.counters().snapshot();
        Ok(Response::new(proto::GetStatusResponse {
            active,
            last_rejection,
            counts: Some(proto::ActivationCounts {
                activated: counts.activated,
                unchanged: counts.unchanged,
                rejected_load: counts.rejected_load,
                rejected_signature: counts.rejected_signature,
                rejected_compile: counts.rejected_compile,
                rejected_tests: counts.rejected_tests,
            }),
        }))
    }
}

fn push_response(activation: Activation) -> proto::PushBundleResponse {
    match activation {
        Activation::Activated {
            name,
            revision,
            digest,
        } => proto::PushBundleResponse {
            result: PushResult::Activated.into(),
            name: name.to_string(),
            revision: revision.to_string(),
            digest: digest.to_string(),
            errors: Vec::new(),
        },
        Activation::Unchanged { digest } => proto::PushBundleResponse {
            result: PushResult::Unchanged.into(),
            digest,
            ..Default::default()
        },
        Activation::Rejected { digest, errors, .. } => proto::PushBundleResponse {
            result: PushResult::Rejected.into(),
            digest: digest.unwrap_or_default(),
            errors,
            ..Default::default()
        },
    }
}

fn rejection(rejection: &Rejection) -> proto::Rejection {
    proto::Rejection {
        source: rejection.source.clone(),
        rejected_at: Some(timestamp(rejection.at)),
        digest: rejection.digest.clone(),
        errors: rejection.errors.clone(),
    }
}

fn timestamp(time: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// Reads the SPIFFE ID of a client certificate: its one URI SAN.
fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the client certificate: {e}"))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|e| format!("invalid subject alternative names: {e}"))?;
    let uris: Vec<&str> = names
        .iter()
        .flat_map(|extension| extension.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "the client certificate holds {} URI SANs; an X.509-SVID holds exactly one",
            uris.len()
        ));
    };
    SpiffeId::parse(uri)
        .map_err(|e| format!("invalid SPIFFE ID `{uri}` in the client certificate: {e}"))
}
