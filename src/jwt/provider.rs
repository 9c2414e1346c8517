//! Providers compiled from the manifest's `jwt:` section.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use sha2::{Digest, Sha256};

use super::jwks::KeySet;
use super::spec::{JwksSpec, JwtSpec, ProviderSpec, RefreshSpec};
use crate::policy::model::ClaimMapping;

/// Maximum clock-skew leeway a provider may set, in seconds.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// Bounds of `max_token_bytes`.
pub const MIN_TOKEN_BYTES: usize = 256;
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Where a token is read: a header and an optional scheme before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSource {
    pub header: String,
    /// Scheme such as `Bearer`, compared without regard to case.
    pub scheme: Option<String>,
}

/// A remote JWKS and how it is refreshed. Two providers with equal values
/// share one fetcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteJwks {
    pub url: String,
    pub refresh: RefreshSpec,
}

/// Where a provider's keys come from once compiled.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Keys written in the bundle, inline or as a file.
    Static(Arc<KeySet>),
    Remote(RemoteJwks),
}

/// A compiled provider.
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway_seconds: u64,
    pub max_token_bytes: usize,
    pub source: TokenSource,
    /// Request headers to remove before the request goes upstream.
    pub remove_headers: Vec<String>,
    pub jwks: JwksSource,
    /// One prepared `Validation` per allowed algorithm.
    validations: Vec<(Algorithm, Validation)>,
    /// SHA-256 over every setting that changes what a verified token means,
    /// keys and claim mapping included. Verified tokens are cached per value.
    pub settings_digest: [u8; 32],
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("source", &self.source)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// The `Validation` for `alg`, if the provider allows it.
    pub fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(allowed, _)| *allowed == alg)
            .map(|(_, validation)| validation)
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// Providers reading one token source.
#[derive(Debug)]
pub struct Location {
    pub source: TokenSource,
    /// Indexes into [`Providers::providers`].
    pub providers: Vec<usize>,
    /// The largest `max_token_bytes` of these providers: longer values are
    /// rejected before they are parsed.
    pub max_token_bytes: usize,
}

/// The compiled `jwt:` section of a bundle.
#[derive(Debug, Default)]
pub struct Providers {
    pub providers: Vec<Arc<Provider>>,
    pub locations: Vec<Location>,
    pub claims: ClaimMapping,
}

impl Providers {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Compiles the `jwt:` section. `files` are the bundle's files, which
    /// `jwks.file` names. Every problem is pushed to `errors`, prefixed with
    /// `context` (the manifest's file name).
    pub fn compile(
        spec: &JwtSpec,
        claims: &ClaimMapping,
        files: &BTreeMap<String, Vec<u8>>,
        context: &str,
        errors: &mut Vec<String>,
    ) -> Providers {
        let mut providers: Vec<Arc<Provider>> = Vec::with_capacity(spec.providers.len());
        let mut issuers = HashSet::new();
        for provider in &spec.providers {
            if !issuers.insert(provider.issuer.as_str()) {
                errors.push(format!(
                    "{context}: jwt provider `{}`: duplicate issuer",
                    provider.issuer
                ));
                continue;
            }
            match compile_provider(provider, claims, files) {
                Ok(compiled) => providers.push(Arc::new(compiled)),
                Err(problems) => errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{context}: jwt provider `{}`: {p}", provider.issuer)),
                ),
            }
        }

        let mut locations: Vec<Location> = Vec::new();
        for (index, provider) in providers.iter().enumerate() {
            match locations.iter_mut().find(|l| l.source == provider.source) {
                Some(location) => {
                    location.providers.push(index);
                    location.max_token_bytes =
                        location.max_token_bytes.max(provider.max_token_bytes);
                }
                None => locations.push(Location {
                    source: provider.source.clone(),
                    providers: vec![index],
                    max_token_bytes: provider.max_token_bytes,
                }),
            }
        }

        Providers {
            providers,
            locations,
            claims: claims.clone(),
        }
    }
}

fn compile_provider(
    spec: &ProviderSpec,
    claims: &ClaimMapping,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Provider, Vec<String>> {
    let mut problems = Vec::new();

    if spec.issuer.trim().is_empty() {
        problems.push("`issuer` is empty".to_owned());
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.is_empty()) {
        problems.push("`audiences` must list at least one non-empty audience".to_owned());
    }

    let mut algorithms = Vec::with_capacity(spec.algorithms.len());
    for name in &spec.algorithms {
        match name.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => problems.push(format!(
                "algorithm `{name}` is not allowed: HMAC needs a shared secret, and keys here are public"
            )),
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => {}
            Err(_) => problems.push(format!(
                "unknown algorithm `{name}`; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
            )),
        }
    }
    if spec.algorithms.is_empty() {
        problems.push("`algorithms` is empty".to_owned());
    }

    if spec.leeway_seconds > MAX_LEEWAY_SECONDS {
        problems.push(format!(
            "`leeway_seconds` is {}, more than the limit of {MAX_LEEWAY_SECONDS}",
            spec.leeway_seconds
        ));
    }
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&spec.max_token_bytes) {
        problems.push(format!(
            "`max_token_bytes` is {}; use a value from {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES}",
            spec.max_token_bytes
        ));
    }

    let header = spec.from.header.clone();
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        problems.push(format!(
            "`from.header` `{header}` must be a lower-case header name"
        ));
    }
    let scheme = match &spec.from.scheme {
        Some(scheme) if scheme.is_empty() => None,
        Some(scheme) => {
            if !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                problems.push(format!("`from.scheme` `{scheme}` must be one word"));
            }
            Some(scheme.clone())
        }
        None if header == "authorization" => Some("Bearer".to_owned()),
        None => None,
    };
    if header == "authorization" && scheme.is_none() {
        problems.push("`from.scheme` must be set when reading `authorization`".to_owned());
    }

    let (jwks, jwks_identity) = match compile_jwks(&spec.jwks, files) {
        Ok(compiled) => compiled,
        Err(problem) => {
            problems.push(problem);
            return Err(problems);
        }
    };
    if let JwksSource::Static(keys) = &jwks
        && !keys
            .iter()
            .any(|key| algorithms.iter().any(|alg| key.fits(*alg)))
    {
        problems.push("no key in the JWKS fits any of the allowed `algorithms`".to_owned());
    }

    if !problems.is_empty() {
        return Err(problems);
    }

    let validations = algorithms
        .iter()
        .map(|alg| (*alg, validation(spec, *alg)))
        .collect();
    let remove_headers = if spec.forward {
        Vec::new()
    } else {
        vec![header.clone()]
    };

    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(spec).unwrap_or_default());
    hasher.update(jwks_identity);
    for path in [&claims.roles, &claims.tenant] {
        hasher.update(path.as_deref().unwrap_or("\0").as_bytes());
        hasher.update([0]);
    }

    Ok(Provider {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone(),
        algorithms,
        leeway_seconds: spec.leeway_seconds,
        max_token_bytes: spec.max_token_bytes,
        source: TokenSource { header, scheme },
        remove_headers,
        jwks,
        validations,
        settings_digest: hasher.finalize().into(),
    })
}

/// Builds the `Validation` for one algorithm: signature pinned to `alg`,
/// `exp`, `iss` and `aud` required, `nbf` checked.
fn validation(spec: &ProviderSpec, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = spec.leeway_seconds;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_audience(&spec.audiences);
    validation.set_issuer(&[&spec.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation
}

/// Compiles the key source and returns it with the bytes that identify it.
fn compile_jwks(
    spec: &JwksSpec,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(JwksSource, Vec<u8>), String> {
    let static_keys = |document: &[u8], origin: &str| -> Result<(JwksSource, Vec<u8>), String> {
        let parsed = KeySet::parse(document).map_err(|e| format!("{origin}: {e}"))?;
        if let Some(first) = parsed.skipped.first() {
            return Err(format!("{origin}: {first}"));
        }
        let identity = parsed.keys.digest().to_vec();
        Ok((JwksSource::Static(Arc::new(parsed.keys)), identity))
    };

    match (&spec.inline, &spec.file, &spec.url) {
        (Some(inline), None, None) => {
            check_no_refresh(spec)?;
            static_keys(inline.to_string().as_bytes(), "`jwks.inline`")
        }
        (None, Some(path), None) => {
            check_no_refresh(spec)?;
            let document = files.get(path.trim_start_matches("./")).ok_or_else(|| {
                format!("`jwks.file` `{path}` is not a `.json` file in the bundle")
            })?;
            static_keys(document, &format!("`jwks.file` `{path}`"))
        }
        (None, None, Some(url)) => {
            check_url(url, spec.allow_http)?;
            check_refresh(&spec.refresh)?;
            let remote = RemoteJwks {
                url: url.clone(),
                refresh: spec.refresh.clone(),
            };
            Ok((JwksSource::Remote(remote), url.as_bytes().to_vec()))
        }
        _ => Err("`jwks` must set exactly one of `inline`, `file` and `url`".to_owned()),
    }
}

fn check_no_refresh(spec: &JwksSpec) -> Result<(), String> {
    if spec.refresh != RefreshSpec::default() || spec.allow_http {
        return Err("`jwks.refresh` and `jwks.allow_http` apply only to `jwks.url`".to_owned());
    }
    Ok(())
}

fn check_url(url: &str, allow_http: bool) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("`jwks.url` `{url}` is invalid: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || allow_http => Ok(()),
        "http" => Err(format!(
            "`jwks.url` `{url}` uses plain http to a remote host; use https, or set `jwks.allow_http: true`"
        )),
        other => Err(format!(
            "`jwks.url` `{url}` has the scheme `{other}`; use https"
        )),
    }
}

fn check_refresh(refresh: &RefreshSpec) -> Result<(), String> {
    if refresh.interval_seconds == Some(0) || refresh.min_seconds == 0 {
        return Err("`jwks.refresh` intervals must be at least 1 second".to_owned());
    }
    if refresh.min_seconds > refresh.max_seconds {
        return Err("`jwks.refresh.min_seconds` is greater than `max_seconds`".to_owned());
    }
    if refresh.timeout_seconds == 0 || refresh.timeout_seconds > 60 {
        return Err("`jwks.refresh.timeout_seconds` must be from 1 to 60".to_owned());
    }
    Ok(())
}
