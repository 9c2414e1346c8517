//! Caller identities: the workload (a SPIFFE ID) and the end user (verified
//! JWT claims).

pub mod workload;
pub mod x509;
pub mod xfcc;

#[cfg(test)]
pub(crate) mod test_certs;

use std::sync::Arc;

use crate::policy::model::ClaimMapping;
use crate::spiffe::SpiffeId;

/// The identities a decision is made for.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub workload: Option<SpiffeId>,
    pub user: Option<Arc<User>>,
}

/// An end user, from claims that were verified (or, in bundle tests, stated).
#[derive(Debug, Clone)]
pub struct User {
    pub subject: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// From `scope` (space-separated string) or `scp` (array of strings).
    pub scopes: Vec<String>,
    /// From the claim path the bundle configures for roles.
    pub roles: Vec<String>,
    /// From the claim path the bundle configures for the tenant.
    pub tenant: Option<String>,
    pub claims: serde_json::Value,
    /// `claims` converted once for CEL conditions.
    pub cel_claims: cel::Value,
    /// The whole `jwt` variable of CEL conditions, built once.
    pub cel_jwt: Option<crate::policy::condition::CelVal>,
}

impl User {
    /// Builds a user from a claims object, reading roles and tenant from the
    /// configured claim paths. Claims of an unexpected type are ignored, so a
    /// malformed `scope` grants nothing instead of failing the request.
    pub fn from_claims(claims: serde_json::Value, mapping: &ClaimMapping) -> User {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let subject = text("sub");
        let issuer = text("iss");
        let audiences = match claims.get("aud") {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => strings_of(many),
            _ => Vec::new(),
        };

        let mut scopes: Vec<String> = match claims.get("scope") {
            Some(serde_json::Value::String(list)) => {
                list.split_ascii_whitespace().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        if let Some(serde_json::Value::Array(list)) = claims.get("scp") {
            scopes.extend(strings_of(list));
        }

        let roles = match mapping
            .roles
            .as_deref()
            .and_then(|path| claim_at(&claims, path))
        {
            Some(serde_json::Value::Array(list)) => strings_of(list),
            Some(serde_json::Value::String(one)) => {
                one.split_ascii_whitespace().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        let tenant = mapping
            .tenant
            .as_deref()
            .and_then(|path| claim_at(&claims, path))
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        let cel_claims = json_to_cel(&claims);
        let mut user = User {
            subject,
            issuer,
            audiences,
            scopes,
            roles,
            tenant,
            claims,
            cel_claims,
            cel_jwt: None,
        };
        let jwt = crate::policy::condition::jwt_value(Some(&user));
        user.cel_jwt = crate::policy::condition::to_val(jwt).map(std::sync::Arc::from);
        user
    }
}

/// Follows a dot-separated path such as `realm_access.roles` into a JSON value.
pub fn claim_at<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(claims, |value, key| value.as_object()?.get(key))
}

fn strings_of(values: &[serde_json::Value]) -> Vec<String> {
    values
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Converts JSON to a CEL value. Integers stay integers so that
/// `jwt.claims.amount_limit > 100` compares as CEL users expect.
pub fn json_to_cel(value: &serde_json::Value) -> cel::Value {
    match value {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => cel::Value::Int(i),
            (None, Some(u), _) => cel::Value::UInt(u),
            (None, None, Some(f)) => cel::Value::Float(f),
            _ => cel::Value::Null,
        },
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(map) => {
            let entries: std::collections::HashMap<String, cel::Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            cel::Value::Map(entries.into())
        }
    }
}
