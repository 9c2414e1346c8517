//! JSON Web Key Sets: parsing into verification keys.
//!
//! Only asymmetric signature keys are kept. A key whose `use`, `key_ops` or
//! `alg` says it is not for verifying signatures is skipped, and so is any
//! symmetric (`oct`) key, so an HMAC secret is never derived from a JWKS.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

/// Most keys a JWKS may hold; identity providers publish a handful.
pub const MAX_KEYS: usize = 100;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The type and curve of a public key, which fix the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Returns whether a key of this kind can verify `alg` signatures.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// A public verification key.
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The `alg` the JWKS declares for the key, which then is the only
    /// algorithm it verifies.
    pub alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl Key {
    /// Returns whether this key may verify a token signed with `alg`: the
    /// algorithm comes from the key's type and declared `alg`, never from
    /// the token alone.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|declared| declared == alg)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
pub struct KeySet {
    keys: Vec<Key>,
    /// SHA-256 of the document, to tell a changed set from a refetched one.
    digest: [u8; 32],
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.keys).finish()
    }
}

/// A parsed key set and the keys it skipped, with the reason for each.
#[derive(Debug)]
pub struct Parsed {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

impl KeySet {
    /// Parses a JWKS document. Fails when the document is not a JWKS, lists
    /// more than [`MAX_KEYS`] keys, repeats a `kid`, or has no usable key.
    pub fn parse(document: &[u8]) -> Result<Parsed, String> {
        let value: serde_json::Value =
            serde_json::from_slice(document).map_err(|e| format!("invalid JSON: {e}"))?;
        let Some(entries) = value.get("keys").and_then(|keys| keys.as_array()) else {
            return Err("not a JWKS: expected an object with a `keys` array".to_owned());
        };
        if entries.len() > MAX_KEYS {
            return Err(format!(
                "the JWKS lists {} keys, more than the limit of {MAX_KEYS}",
                entries.len()
            ));
        }

        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        let mut kids = HashSet::new();
        for (position, entry) in entries.iter().enumerate() {
            let kid = match entry.get("kid") {
                None => None,
                Some(serde_json::Value::String(kid)) => Some(kid.clone()),
                Some(_) => return Err(format!("key {position}: `kid` is not a string")),
            };
            if let Some(kid) = &kid
                && !kids.insert(kid.clone())
            {
                return Err(format!("two keys have the `kid` `{kid}`"));
            }
            match parse_key(entry, kid) {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(format!("key {position}: {reason}")),
            }
        }
        if keys.is_empty() {
            return Err("the JWKS has no usable signature key".to_owned());
        }

        Ok(Parsed {
            keys: KeySet {
                keys,
                digest: Sha256::digest(document).into(),
            },
            skipped,
        })
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|key| key.kid.as_deref() == Some(kid))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

fn parse_key(entry: &serde_json::Value, kid: Option<String>) -> Result<Key, String> {
    let text = |name: &str| entry.get(name).and_then(|v| v.as_str());

    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(format!("`use` is {usage}, not `sig`"));
    }
    if let Some(operations) = entry.get("key_ops") {
        let verifies = operations
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include `verify`".to_owned());
        }
    }
    let alg = match entry.get("alg") {
        None => None,
        Some(serde_json::Value::String(name)) => match name.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                return Err(format!("unsupported `alg` `{name}`"));
            }
            Ok(alg) => Some(alg),
        },
        Some(_) => return Err("`alg` is not a string".to_owned()),
    };

    let (kind, decoding) = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => {
            let n = component(entry, "n")?;
            let e = component(entry, "e")?;
            let bits = significant_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus of {bits} bits is shorter than {MIN_RSA_BITS}"
                ));
            }
            if e.is_empty() || e.len() > 8 {
                return Err("RSA exponent has an invalid size".to_owned());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        (Some("EC"), Some(curve @ ("P-256" | "P-384"))) => {
            let (kind, size) = if curve == "P-256" {
                (KeyKind::EcP256, 32)
            } else {
                (KeyKind::EcP384, 48)
            };
            let x = component(entry, "x")?;
            let y = component(entry, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("{curve} coordinates must be {size} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = component(entry, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".to_owned());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        (Some("oct"), _) => return Err("symmetric (`oct`) keys are never used".to_owned()),
        (Some(kty), crv) => {
            return Err(format!(
                "unsupported key type `{kty}`{}",
                crv.map(|c| format!(" with curve `{c}`"))
                    .unwrap_or_default()
            ));
        }
        (None, _) => return Err("missing `kty`".to_owned()),
    };

    if let Some(alg) = alg
        && !kind.fits(alg)
    {
        return Err(format!("`alg` {alg:?} does not fit a {kind:?} key"));
    }
    Ok(Key {
        kid,
        kind,
        alg,
        decoding,
    })
}

fn component(entry: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let text = entry
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("missing `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("`{name}` is not unpadded base64url"))
}

fn significant_bits(bytes: &[u8]) -> usize {
    let Some(first) = bytes.iter().position(|b| *b != 0) else {
        return 0;
    };
    let leading = bytes.get(first).map_or(0, |b| b.leading_zeros() as usize);
    (bytes.len() - first) * 8 - leading
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        serde_json::json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
    }

    #[test]
    fn duplicate_kid_rejected() {
        let document = serde_json::json!({"keys": [rsa_jwk("k1"), rsa_jwk("k1")]});
        let error = KeySet::parse(document.to_string().as_bytes()).unwrap_err();
        assert_eq!(error, "two keys have the `kid` `k1`");
    }

    #[test]
    fn symmetric_and_encryption_keys_skipped() {
        let mut encryption = rsa_jwk("enc");
        encryption["use"] = "enc".into();
        let document = serde_json::json!({"keys": [
            rsa_jwk("k1"),
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            encryption,
        ]});
        let parsed = KeySet::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.skipped.len(), 2);
    }

    #[test]
    fn short_rsa_key_skipped() {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let document = serde_json::json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let error = KeySet::parse(document.to_string().as_bytes()).unwrap_err();
        assert_eq!(error, "the JWKS has no usable signature key");
    }

    #[test]
    fn declared_alg_pins_key() {
        let mut jwk = rsa_jwk("k1");
        jwk["alg"] = "PS256".into();
        let parsed =
            KeySet::parse(serde_json::json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        let key = parsed.keys.by_kid("k1").unwrap();
        assert!(key.fits(Algorithm::PS256));
        assert!(!key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::HS256));
    }
}
