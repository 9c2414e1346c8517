//! Decisions and their machine-readable reasons.
//!
//! Evaluation never fails: every input, well-formed or not, ends in a
//! [`Decision`] that says allow or deny, which rule decided, why, and under
//! which bundle revision.

use std::sync::Arc;

/// The cause of a decision. The string form is stable: it
/// appears in responses, dynamic metadata, logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow rule matched and no deny rule did.
    AllowedByRule,
    /// A deny rule matched.
    DeniedByRule,
    /// No allow rule matched (default deny).
    NoMatchingRule,
    /// A deny rule's condition failed to evaluate, so the rule was applied.
    ConditionError,
    /// The bundle runs in audit mode: the request is allowed whatever the
    /// rules decide, and the decision they would have enforced is logged.
    AuditMode,

    /// No bundle is active yet.
    NoActiveBundle,
    /// The CheckRequest lacks the HTTP request attributes.
    MissingHttpAttributes,
    /// The HTTP method is missing or not a valid token.
    InvalidMethod,
    /// The host is missing characters a host name may hold.
    InvalidHost,

    PathNotAbsolute,
    PathTooLong,
    PathInvalidCharacter,
    PathControlCharacter,
    PathBackslash,
    PathParameter,
    PathInvalidEncoding,
    PathEncodedSlash,
    PathEncodedDot,
    PathEncodedPercent,
    PathEmptySegment,

    /// `source.principal` is present but is not a valid SPIFFE ID.
    InvalidPrincipal,
    /// Two sources of workload identity name different workloads.
    PrincipalMismatch,
    /// The peer certificate is present but is not a usable X.509-SVID.
    InvalidCertificate,
    /// The peer certificate does not verify against the trust bundle.
    UntrustedCertificate,
    /// The workload's trust domain is not among the bundle's trusted ones.
    UntrustedTrustDomain,

    /// A request header or the request as a whole exceeds a size limit.
    RequestTooLarge,

    /// The bearer token is malformed, unsigned, expired or otherwise invalid.
    InvalidToken,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 27] = [
        Reason::AllowedByRule,
        Reason::DeniedByRule,
        Reason::NoMatchingRule,
        Reason::ConditionError,
        Reason::AuditMode,
        Reason::NoActiveBundle,
        Reason::MissingHttpAttributes,
        Reason::InvalidMethod,
        Reason::InvalidHost,
        Reason::PathNotAbsolute,
        Reason::PathTooLong,
        Reason::PathInvalidCharacter,
        Reason::PathControlCharacter,
        Reason::PathBackslash,
        Reason::PathParameter,
        Reason::PathInvalidEncoding,
        Reason::PathEncodedSlash,
        Reason::PathEncodedDot,
        Reason::PathEncodedPercent,
        Reason::PathEmptySegment,
        Reason::InvalidPrincipal,
        Reason::PrincipalMismatch,
        Reason::InvalidCertificate,
        Reason::UntrustedCertificate,
        Reason::UntrustedTrustDomain,
        Reason::RequestTooLarge,
        Reason::InvalidToken,
    ];

    /// The position of this reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AllowedByRule => "allowed_by_rule",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::ConditionError => "condition_error",
            Reason::AuditMode => "audit_mode",
            Reason::NoActiveBundle => "no_active_bundle",
            Reason::MissingHttpAttributes => "missing_http_attributes",
            Reason::InvalidMethod => "invalid_method",
            Reason::InvalidHost => "invalid_host",
            Reason::PathNotAbsolute => "path_not_absolute",
            Reason::PathTooLong => "path_too_long",
            Reason::PathInvalidCharacter => "path_invalid_character",
            Reason::PathControlCharacter => "path_control_character",
            Reason::PathBackslash => "path_backslash",
            Reason::PathParameter => "path_parameter",
            Reason::PathInvalidEncoding => "path_invalid_encoding",
            Reason::PathEncodedSlash => "path_encoded_slash",
            Reason::PathEncodedDot => "path_encoded_dot",
            Reason::PathEncodedPercent => "path_encoded_percent",
            Reason::PathEmptySegment => "path_empty_segment",
            Reason::InvalidPrincipal => "invalid_principal",
            Reason::PrincipalMismatch => "principal_mismatch",
            Reason::InvalidCertificate => "invalid_certificate",
            Reason::UntrustedCertificate => "untrusted_certificate",
            Reason::UntrustedTrustDomain => "untrusted_trust_domain",
            Reason::RequestTooLarge => "request_too_large",
            Reason::InvalidToken => "invalid_token",
        }
    }

    /// A one-line explanation for people reading a deny body or a log.
    pub fn message(self) -> &'static str {
        match self {
            Reason::AllowedByRule => "an allow rule matched",
            Reason::DeniedByRule => "a deny rule matched",
            Reason::NoMatchingRule => "no allow rule matched the request",
            Reason::ConditionError => "a deny rule's condition could not be evaluated",
            Reason::AuditMode => "the bundle is in audit mode and does not enforce",
            Reason::NoActiveBundle => "no policy bundle is active yet",
            Reason::MissingHttpAttributes => "the check request has no HTTP request attributes",
            Reason::InvalidMethod => "the request method is missing or invalid",
            Reason::InvalidHost => "the request host is invalid",
            Reason::PathNotAbsolute => "the request path does not start with `/`",
            Reason::PathTooLong => "the request path is too long",
            Reason::PathInvalidCharacter => "the request path contains an invalid character",
            Reason::PathControlCharacter => "the request path contains a control character",
            Reason::PathBackslash => "the request path contains a backslash",
            Reason::PathParameter => "the request path contains a `;` path parameter",
            Reason::PathInvalidEncoding => "the request path has an invalid percent-encoding",
            Reason::PathEncodedSlash => "the request path contains an encoded `/` or `\\`",
            Reason::PathEncodedDot => "the request path contains an encoded `.`",
            Reason::PathEncodedPercent => "the request path contains an encoded `%`",
            Reason::PathEmptySegment => "the request path contains `//`",
            Reason::InvalidPrincipal => "the source principal is not a valid SPIFFE ID",
            Reason::PrincipalMismatch => "the workload identity sources disagree",
            Reason::InvalidCertificate => "the peer certificate is not a valid X.509-SVID",
            Reason::UntrustedCertificate => "the peer certificate is not trusted",
            Reason::UntrustedTrustDomain => "the workload's trust domain is not trusted",
            Reason::RequestTooLarge => "the request exceeds a size limit",
            Reason::InvalidToken => "the bearer token is invalid",
        }
    }

    /// The HTTP status a deny with this reason returns: 401 where the user's
    /// token is at fault, 431 where the request exceeds a size limit, and 403
    /// otherwise.
    pub fn deny_status(self) -> u16 {
        match self {
            Reason::InvalidToken => 401,
            Reason::RequestTooLarge => 431,
            _ => 403,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// The id of the rule that decided, if a rule did.
    pub rule: Option<Arc<str>>,
    /// The revision of the bundle that decided; empty when none is active.
    pub revision: Arc<str>,
    /// Audit-mode rules that matched but did not affect the decision.
    pub audit_matches: Vec<Arc<str>>,
    /// Extra detail for operators, such as a token verification error. It is
    /// logged and returned in the deny body, so it never contains a credential.
    pub detail: Option<String>,
}

impl Decision {
    pub fn deny(reason: Reason, revision: Arc<str>) -> Self {
        Decision {
            allowed: false,
            reason,
            rule: None,
            revision,
            audit_matches: Vec::new(),
            detail: None,
        }
    }

    pub fn status(&self) -> u16 {
        if self.allowed {
            200
        } else {
            self.reason.deny_status()
        }
    }

    pub fn decision_str(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_reasons_in_order() {
        for (position, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position, "reason `{reason}`");
        }
    }
}
