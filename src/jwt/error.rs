//! Why a bearer token was rejected.

/// The reason a token failed verification. The string form is stable: it is
/// returned in the deny body, `www-authenticate`, dynamic metadata and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// The credential header holds more than one token, such as
    /// `Bearer a, Bearer b`, or several configured headers hold one each.
    MultipleTokens,
    /// The token exceeds the provider's `max_token_bytes`.
    TokenTooLarge,
    /// The token is not three dot-separated segments of base64url text.
    MalformedToken,
    /// A segment is not valid unpadded base64url.
    MalformedBase64,
    /// The header or the claims are not a JSON object, or repeat a member.
    MalformedJson,
    /// The header has no `alg` member.
    MissingAlgorithm,
    /// The header says `alg: none` in any letter case.
    AlgNone,
    /// The header names an algorithm authzd does not implement.
    UnsupportedAlgorithm,
    /// The algorithm is not in the provider's `algorithms`.
    AlgorithmNotAllowed,
    /// The key named by `kid` has a type or declared `alg` that does not fit
    /// the header's algorithm, such as `HS256` with an RSA key.
    KeyTypeMismatch,
    /// The header has a `crit` member; no extension is supported.
    CritNotSupported,
    /// The header carries `jku`, `x5u`, `x5c` or `jwk`. Keys named by the
    /// token are never fetched or trusted.
    UntrustedKeyHeader,
    /// The header has a member that changes how the token is read (`b64`,
    /// `enc`, `zip`), which only other JOSE forms use.
    UnsupportedHeader,
    /// No key of the provider has the token's `kid`.
    UnknownKey,
    /// The provider's remote key set has not been fetched yet.
    KeysUnavailable,
    /// No allowed key verifies the signature.
    InvalidSignature,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    IssuedInFuture,
    /// The claims have no numeric `exp`.
    MissingExpiry,
    /// A registered claim (`exp`, `nbf`, `iat`, `sub`) has the wrong type.
    InvalidClaim,
    /// The claims have no `iss` string.
    MissingIssuer,
    /// No provider reading this header is configured for the token's issuer.
    UnknownIssuer,
    /// `aud` is absent, malformed, or names none of the provider's audiences.
    InvalidAudience,
}

impl TokenError {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::MultipleTokens => "multiple_tokens",
            TokenError::TokenTooLarge => "token_too_large",
            TokenError::MalformedToken => "malformed_token",
            TokenError::MalformedBase64 => "malformed_base64",
            TokenError::MalformedJson => "malformed_json",
            TokenError::MissingAlgorithm => "missing_algorithm",
            TokenError::AlgNone => "alg_none",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenError::KeyTypeMismatch => "key_type_mismatch",
            TokenError::CritNotSupported => "crit_not_supported",
            TokenError::UntrustedKeyHeader => "untrusted_key_header",
            TokenError::UnsupportedHeader => "unsupported_header",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::InvalidSignature => "invalid_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::MissingExpiry => "missing_expiry",
            TokenError::InvalidClaim => "invalid_claim",
            TokenError::MissingIssuer => "missing_issuer",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::InvalidAudience => "invalid_audience",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
