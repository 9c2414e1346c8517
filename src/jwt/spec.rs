//! The `jwt:` section of `bundle.yaml` as written on disk.

use serde::{Deserialize, Serialize};

/// `jwt:` in the manifest: the issuers whose tokens authzd verifies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
}

/// One token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The exact `iss` value of the provider's tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one of them.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms: RS256/384/512, PS256/384/512,
    /// ES256/384 and EdDSA. Defaults to `[RS256, ES256]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Longest token accepted, in bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Where the token is read from; defaults to `authorization: Bearer …`.
    #[serde(default)]
    pub from: TokenSourceSpec,
    /// Keeps the credential header on the request that goes upstream. By
    /// default the header is removed once its token is verified.
    #[serde(default)]
    pub forward: bool,
    pub jwks: JwksSpec,
}

/// The request header a token is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceSpec {
    /// Lower-case header name.
    pub header: String,
    /// Scheme before the token, compared without regard to case. Defaults to
    /// `Bearer` for `authorization` and to none for other headers.
    pub scheme: Option<String>,
}

impl Default for TokenSourceSpec {
    fn default() -> Self {
        TokenSourceSpec {
            header: "authorization".to_owned(),
            scheme: None,
        }
    }
}

/// Where the provider's public keys come from; exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSpec {
    /// A JWKS document written in the manifest.
    pub inline: Option<serde_json::Value>,
    /// A JWKS file in the bundle, by path relative to the bundle root.
    pub file: Option<String>,
    /// An `http` or `https` URL fetched in the background.
    pub url: Option<String>,
    /// Accepts a plain `http` URL for a host other than the loopback.
    /// By default only `https`, or `http` to `localhost` and loopback
    /// addresses, is accepted, because keys fetched in clear text can be
    /// replaced on the way.
    #[serde(default)]
    pub allow_http: bool,
    /// Refresh settings; only for `url`.
    #[serde(default)]
    pub refresh: RefreshSpec,
}

/// How a remote JWKS is kept current.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSpec {
    /// Fixed refresh interval in seconds. When unset, the interval is the
    /// response's `Cache-Control: max-age`, kept between `min_seconds` and
    /// `max_seconds`.
    pub interval_seconds: Option<u64>,
    pub min_seconds: u64,
    pub max_seconds: u64,
    /// Shortest time between two fetches caused by tokens naming an unknown
    /// `kid`, in seconds.
    pub unknown_kid_min_seconds: u64,
    /// Time limit of one fetch, in seconds.
    pub timeout_seconds: u64,
}

impl Default for RefreshSpec {
    fn default() -> Self {
        RefreshSpec {
            interval_seconds: None,
            min_seconds: 60,
            max_seconds: 3600,
            unknown_kid_min_seconds: 30,
            timeout_seconds: 5,
        }
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}

fn default_leeway() -> u64 {
    60
}

fn default_max_token_bytes() -> usize {
    8 * 1024
}
