//! The bundle format as written on disk (format version 1), before it is
//! checked and compiled. Every struct rejects unknown fields, so a misspelled
//! key is an error instead of a rule that silently matches more.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::request::PathOptions;

/// `bundle.yaml`: the manifest at the root of a bundle directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version; only `1` exists.
    pub format: u32,
    pub name: String,
    pub revision: String,
    #[serde(default)]
    pub description: String,
    /// `audit` evaluates the whole bundle in shadow: decisions are logged but
    /// every request is allowed. Defaults to `enforce`.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub paths: PathOptions,
    #[serde(default)]
    pub claims: ClaimMapping,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub workloads: WorkloadSpec,
    /// Issuers of end-user tokens; without it every request is anonymous.
    #[serde(default)]
    pub jwt: crate::jwt::JwtSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// Where roles, tenant and scopes are found in a user's claims. Paths are
/// dot-separated, such as `realm_access.roles`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub roles: Option<String>,
    pub tenant: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            roles: Some("roles".to_owned()),
            tenant: Some("tenant".to_owned()),
        }
    }
}

/// Workload identity settings: the trusted trust domains with their trust
/// bundles, and whether `x-forwarded-client-cert` is read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Trust domains whose workloads are accepted. Empty accepts any trust
    /// domain and leaves certificate chains to Envoy.
    #[serde(default)]
    pub trust_domains: Vec<TrustDomainSpec>,
    /// Read the client identity from `x-forwarded-client-cert`. Off by
    /// default, which ignores the header, because any client can send it
    /// unless every proxy before authzd sanitizes it.
    #[serde(default)]
    pub trust_forwarded_client_cert: bool,
}

/// A trusted trust domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainSpec {
    /// The bare trust domain name, such as `example.org`.
    pub name: String,
    /// The trust bundle: CA certificates in PEM that certificate chains of
    /// this trust domain must lead to.
    pub ca_pem: Option<String>,
    /// Accept this trust domain's certificates without chain verification
    /// when it has no `ca_pem`, which overrides the default of rejecting
    /// them. Envoy's own TLS validation is then the only chain check.
    #[serde(default)]
    pub allow_unverified_certificates: bool,
}

/// A role and its bindings. A caller has the role when any binding matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Values of the user's roles claim that grant this role.
    #[serde(default)]
    pub claim_values: Vec<String>,
    /// User subjects that hold this role.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Workload principal patterns that hold this role.
    #[serde(default)]
    pub principals: Vec<String>,
}

/// A file under `rules/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// One rule. Every field that is present must match; a list matches when any
/// of its entries does, except `scopes`, which must all be granted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub effect: Effect,
    /// `audit` logs what the rule would decide without applying it.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// Require a verified user token (any issuer) when true.
    #[serde(default)]
    pub authenticated: bool,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Header name to accepted values. A header matches when one of its
    /// comma-separated values equals one of the listed values; `*` matches
    /// any present header.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// A CEL expression that must evaluate to `true`.
    pub condition: Option<String>,
}

/// A file under `tests/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub name: String,
    pub request: TestRequest,
    pub expect: TestExpectation,
}

/// A request in a bundle test. Identities are stated directly: the workload
/// as a SPIFFE ID and the user as already-verified claims.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub host: String,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
    pub principal: Option<String>,
    /// Verified JWT claims of the user; absent for an anonymous request.
    pub claims: Option<serde_json::Value>,
    /// The request time in RFC 3339; defaults to the time the test runs.
    pub time: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestExpectation {
    pub decision: ExpectedDecision,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedDecision {
    Allow,
    Deny,
}
