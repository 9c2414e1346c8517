//! From a CheckRequest to a decision: request facts, identities, then the
//! bundle. The server, `authzd eval` and bundle tests all decide here.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use rustls::pki_types::UnixTime;

use crate::decision::{Decision, Reason};
use crate::identity::{Identities, User};
use crate::jwt::TokenError;
use crate::policy::{Bundle, TraceEntry};
use crate::request::RequestFacts;

/// Limits that a CheckRequest must respect before it is evaluated. Envoy's
/// own limits are lower by default, so these only stop abuse.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_headers: 200,
            max_header_bytes: 96 * 1024,
        }
    }
}

/// The source of a request's user identity.
#[derive(Debug, Clone, Default)]
pub enum UserSource {
    /// No user: the request is evaluated as anonymous.
    #[default]
    Anonymous,
    /// A user already verified, or stated directly by a bundle test.
    Verified(Arc<User>),
    /// A token was presented and failed verification: the request is denied
    /// with `invalid_token`, whatever the rules say.
    Rejected(TokenError),
}

/// A decision with the identities it was made for.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    pub identities: Identities,
}

/// Decides a CheckRequest against a bundle. Never fails and never panics on
/// malformed input: whatever is missing or ambiguous becomes a deny reason.
pub fn decide(
    bundle: &Bundle,
    check: &CheckRequest,
    user: &UserSource,
    limits: RequestLimits,
    trace: Option<&mut Vec<TraceEntry>>,
) -> Evaluation {
    let deny = |reason| Evaluation {
        decision: Decision::deny(reason, bundle.revision.clone()),
        identities: Identities::default(),
    };

    let facts = match RequestFacts::from_check(check, bundle.path_options) {
        Ok(facts) => facts,
        Err(reason) => {
            // The request is denied before identities are resolved; the
            // principal Envoy sent, when valid, still names the caller in
            // the decision log.
            let mut evaluation = deny(reason);
            evaluation.identities.workload = check
                .attributes
                .as_ref()
                .and_then(|a| a.source.as_ref())
                .and_then(|peer| crate::spiffe::SpiffeId::parse(&peer.principal).ok());
            return evaluation;
        }
    };
    if facts.headers.len() > limits.max_headers
        || facts.headers.total_size() > limits.max_header_bytes
    {
        return deny(Reason::RequestTooLarge);
    }

    let workload = match bundle.workloads.resolve(&facts, UnixTime::now()) {
        Ok(workload) => workload,
        Err(error) => {
            let mut evaluation = deny(error.reason);
            evaluation.decision.detail = Some(error.detail);
            return evaluation;
        }
    };
    let user = match user {
        UserSource::Anonymous => None,
        UserSource::Verified(user) => Some(user.clone()),
        UserSource::Rejected(error) => {
            let mut decision = Decision::deny(Reason::InvalidToken, bundle.revision.clone());
            decision.detail = Some(error.as_str().to_owned());
            return Evaluation {
                decision,
                identities: Identities {
                    workload,
                    user: None,
                },
            };
        }
    };
    let identities = Identities { workload, user };

    let time = request_time(check).unwrap_or_else(|| chrono::Utc::now().into());
    let decision = bundle.decide_at(&facts, &identities, time, trace);
    Evaluation {
        decision,
        identities,
    }
}

/// The request start time Envoy sends, if present and representable.
fn request_time(check: &CheckRequest) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let time = check.attributes.as_ref()?.request.as_ref()?.time.as_ref()?;
    let nanos = u32::try_from(time.nanos).ok()?;
    chrono::DateTime::from_timestamp(time.seconds, nanos).map(Into::into)
}
