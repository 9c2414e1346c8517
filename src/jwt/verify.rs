//! Verifying one token that is not in the cache.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use serde::de::IgnoredAny;

use super::error::TokenError;
use super::header;
use super::jwks::{Key, KeySet};
use super::provider::Provider;
use super::registry::{Binding, BoundProvider};
use crate::identity::User;

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified {
    pub user: Arc<User>,
    pub provider: Arc<BoundProvider>,
    /// `exp` in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The key-set generation the signature was checked against.
    pub generation: u64,
}

/// Verifies `token`, read from the location with index `location`, against
/// the providers of `binding` at `now` (seconds since the Unix epoch).
pub fn verify(
    token: &str,
    binding: &Binding,
    location: usize,
    now: u64,
) -> Result<Verified, TokenError> {
    let segments = header::split(token)?;
    let jose = header::parse_header(segments.header)?;
    let claims_json = header::decode_segment(segments.claims)?;
    let claims = header::parse_object(&claims_json)?;

    // The provider is chosen by `iss` among those reading this location; the
    // claims are trusted only once that provider's key verifies them.
    let issuer = match claims.get("iss") {
        Some(serde_json::Value::String(issuer)) => issuer.as_str(),
        _ => return Err(TokenError::MissingIssuer),
    };
    let bound = binding
        .providers_at(location)
        .find(|b| b.config.issuer == issuer)
        .ok_or(TokenError::UnknownIssuer)?;
    let provider = &bound.config;
    if token.len() > provider.max_token_bytes {
        return Err(TokenError::TokenTooLarge);
    }

    let loaded = bound.keys.load();
    let generation = loaded.generation;
    let Some(keys) = loaded.keys.as_ref() else {
        return Err(TokenError::KeysUnavailable);
    };
    check_signature(token, &jose, provider, keys, bound).map_err(|error| match error {
        // `jsonwebtoken` reports an `exp` it cannot read as missing.
        TokenError::MissingExpiry if claims.contains_key("exp") => TokenError::InvalidClaim,
        other => other,
    })?;

    let expires_at = check_claims(&claims, provider, now)?;
    let user = User::from_claims(serde_json::Value::Object(claims), &binding.providers.claims);
    Ok(Verified {
        user: Arc::new(user),
        provider: bound.clone(),
        expires_at,
        generation,
    })
}

/// Chooses the key and verifies the signature and the registered claims
/// through `jsonwebtoken`, with the algorithm pinned to one the key fits.
fn check_signature(
    token: &str,
    jose: &header::JoseHeader,
    provider: &Provider,
    keys: &KeySet,
    bound: &BoundProvider,
) -> Result<(), TokenError> {
    let alg = jose.alg;
    match &jose.kid {
        Some(kid) => {
            let Some(key) = keys.by_kid(kid) else {
                if !provider.allows(alg) {
                    return Err(TokenError::AlgorithmNotAllowed);
                }
                bound.keys.request_refetch();
                return Err(TokenError::UnknownKey);
            };
            if !key.fits(alg) {
                return Err(TokenError::KeyTypeMismatch);
            }
            if !provider.allows(alg) {
                return Err(TokenError::AlgorithmNotAllowed);
            }
            decode(token, key, provider, alg)
        }
        None => {
            if !provider.allows(alg) {
                return Err(TokenError::AlgorithmNotAllowed);
            }
            // Without `kid`, every key that fits the algorithm is tried; the
            // first key listed is never assumed to be the signer.
            let mut result = Err(TokenError::UnknownKey);
            for key in keys.iter().filter(|key| key.fits(alg)) {
                result = decode(token, key, provider, alg);
                if result != Err(TokenError::InvalidSignature) {
                    break;
                }
            }
            result
        }
    }
}

fn decode(
    token: &str,
    key: &Key,
    provider: &Provider,
    alg: jsonwebtoken::Algorithm,
) -> Result<(), TokenError> {
    let validation = provider
        .validation(alg)
        .ok_or(TokenError::AlgorithmNotAllowed)?;
    jsonwebtoken::decode::<IgnoredAny>(token, &key.decoding, validation)
        .map(|_| ())
        .map_err(|e| map_error(e.kind()))
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::InvalidAudience,
        ErrorKind::InvalidIssuer => TokenError::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => TokenError::MissingExpiry,
            "iss" => TokenError::MissingIssuer,
            "aud" => TokenError::InvalidAudience,
            _ => TokenError::InvalidClaim,
        },
        ErrorKind::InvalidClaimFormat(claim) if claim == "aud" => TokenError::InvalidAudience,
        ErrorKind::InvalidClaimFormat(_) => TokenError::InvalidClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => TokenError::KeyTypeMismatch,
        ErrorKind::Base64(_) => TokenError::MalformedBase64,
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => TokenError::MalformedJson,
        ErrorKind::InvalidToken => TokenError::MalformedToken,
        // Signature mismatches and keys the crypto backend cannot use.
        _ => TokenError::InvalidSignature,
    }
}

/// Checks the claims `jsonwebtoken` leaves open (`iat`, `sub`) and returns
/// `exp`. It checks `aud` again, so that only a string or an array of
/// strings naming an accepted audience passes.
fn check_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    provider: &Provider,
    now: u64,
) -> Result<u64, TokenError> {
    let expires_at = match claims.get("exp") {
        Some(serde_json::Value::Number(exp)) => exp
            .as_u64()
            .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or(TokenError::InvalidClaim)?,
        Some(_) => return Err(TokenError::InvalidClaim),
        None => return Err(TokenError::MissingExpiry),
    };

    match claims.get("iat") {
        None => {}
        Some(serde_json::Value::Number(iat)) => {
            let iat = iat.as_f64().ok_or(TokenError::InvalidClaim)?;
            if iat > now.saturating_add(provider.leeway_seconds) as f64 {
                return Err(TokenError::IssuedInFuture);
            }
        }
        Some(_) => return Err(TokenError::InvalidClaim),
    }

    if claims.get("sub").is_some_and(|sub| !sub.is_string()) {
        return Err(TokenError::InvalidClaim);
    }

    let accepted = |aud: &serde_json::Value| {
        aud.as_str()
            .is_some_and(|aud| provider.audiences.iter().any(|a| a == aud))
    };
    let audience_ok = match claims.get("aud") {
        Some(aud @ serde_json::Value::String(_)) => accepted(aud),
        Some(serde_json::Value::Array(list)) => {
            list.iter().all(serde_json::Value::is_string) && list.iter().any(accepted)
        }
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::InvalidAudience);
    }
    Ok(expires_at)
}
