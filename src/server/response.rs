//! CheckResponse construction: allow with identity headers, deny with a
//! status and a small JSON body, and dynamic metadata for Envoy's access log
//! in both cases.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;

use crate::decision::Decision;
use crate::identity::Identities;

/// Header carrying the caller's SPIFFE ID to the upstream.
pub const WORKLOAD_HEADER: &str = "x-authz-workload";
/// Header carrying the verified user subject to the upstream.
pub const SUBJECT_HEADER: &str = "x-authz-subject";

/// Returns whether a request carries either identity header itself.
pub fn has_identity_headers(headers: &crate::request::Headers<'_>) -> bool {
    headers.get(WORKLOAD_HEADER).is_some() || headers.get(SUBJECT_HEADER).is_some()
}

/// gRPC status codes Envoy reads in `CheckResponse.status`.
const CODE_OK: i32 = 0;
const CODE_PERMISSION_DENIED: i32 = 7;
const CODE_UNAUTHENTICATED: i32 = 16;

/// Request details the response needs besides the decision.
pub struct ResponseContext<'a> {
    pub decision_id: &'a str,
    pub identities: &'a Identities,
    /// Request headers to remove before the request goes upstream, such as
    /// the credential header once its token is verified.
    pub remove_headers: &'a [String],
    /// Whether the request carries identity headers of its own, which must
    /// not reach the upstream. Checked by the caller, so the response names
    /// only headers that are present.
    pub sent_identity_headers: bool,
}

pub fn build(decision: &Decision, context: &ResponseContext<'_>) -> CheckResponse {
    let metadata = metadata(decision, context.decision_id);
    if decision.allowed {
        allow(context, metadata)
    } else {
        deny(decision, context, metadata)
    }
}

fn allow(context: &ResponseContext<'_>, metadata: Struct) -> CheckResponse {
    let mut headers = Vec::with_capacity(2);
    // Identity headers are always overwritten or removed, so a client can
    // never send its own `x-authz-*` values to the upstream.
    let mut headers_to_remove = context.remove_headers.to_vec();
    match &context.identities.workload {
        Some(id) => headers.push(header(WORKLOAD_HEADER, id.as_str())),
        None if context.sent_identity_headers => {
            headers_to_remove.push(WORKLOAD_HEADER.to_owned());
        }
        None => {}
    }
    match &context.identities.user {
        Some(user) if !user.subject.is_empty() => {
            headers.push(header(SUBJECT_HEADER, &user.subject));
        }
        _ if context.sent_identity_headers => headers_to_remove.push(SUBJECT_HEADER.to_owned()),
        _ => {}
    }

    CheckResponse {
        status: Some(Status {
            code: CODE_OK,
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
    }
}

fn deny(decision: &Decision, context: &ResponseContext<'_>, metadata: Struct) -> CheckResponse {
    let status = decision.status();
    let mut body = serde_json::json!({
        "decision": "deny",
        "reason": decision.reason.as_str(),
        "message": decision.reason.message(),
        "decision_id": context.decision_id,
    });
    if let Some(detail) = &decision.detail {
        body["detail"] = serde_json::Value::String(detail.clone());
    }

    let mut headers = vec![header("content-type", "application/json")];
    if status == 401 {
        let description = decision
            .detail
            .as_deref()
            .unwrap_or(decision.reason.message());
        headers.push(header(
            "www-authenticate",
            &format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            ),
        ));
    }

    let code = if status == 401 {
        CODE_UNAUTHENTICATED
    } else {
        CODE_PERMISSION_DENIED
    };
    CheckResponse {
        status: Some(Status {
            code,
            message: decision.reason.as_str().to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body: body.to_string(),
        })),
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        // OVERWRITE_IF_EXISTS_OR_ADD: replace whatever the client sent.
        append_action: 2,
        ..Default::default()
    }
}

fn metadata(decision: &Decision, decision_id: &str) -> Struct {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut fields = HashMap::with_capacity(6);
    fields.insert("decision".to_owned(), text(decision.decision_str()));
    fields.insert("reason".to_owned(), text(decision.reason.as_str()));
    fields.insert(
        "rule".to_owned(),
        text(decision.rule.as_deref().unwrap_or("")),
    );
    fields.insert("revision".to_owned(), text(&decision.revision));
    fields.insert("decision_id".to_owned(), text(decision_id));
    if let Some(detail) = &decision.detail {
        fields.insert("detail".to_owned(), text(detail));
    }
    Struct { fields }
}
