//! Strict reading of a compact JWS: segments, base64url and the JOSE header.
//!
//! The header is read here, before any key is chosen, so that members which
//! would let a token pick its own key or change how it is verified are
//! rejected whatever the signature library would make of them.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use super::error::TokenError;

/// The three segments of a compact JWS, still encoded.
#[derive(Clone, Copy)]
pub struct Segments<'a> {
    pub header: &'a str,
    pub claims: &'a str,
    pub signature: &'a str,
}

impl fmt::Debug for Segments<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field(
                "bytes",
                &(self.header.len() + self.claims.len() + self.signature.len() + 2),
            )
            .finish()
    }
}

/// Splits a token into header, claims and signature. A JWE (five segments)
/// or any other count is malformed; an empty signature is left for the
/// verifier to reject, so that `alg: none` tokens get their own reason.
pub fn split(token: &str) -> Result<Segments<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::MalformedToken);
    };
    if header.is_empty() || claims.is_empty() {
        return Err(TokenError::MalformedToken);
    }
    Ok(Segments {
        header,
        claims,
        signature,
    })
}

/// Decodes one segment: unpadded base64url with canonical trailing bits.
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::MalformedBase64)
}

/// The header members authzd acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Header members that name or carry a key chosen by the token itself.
const KEY_REFERENCE_MEMBERS: [&str; 4] = ["jku", "x5u", "x5c", "jwk"];
/// Header members of other JOSE forms that change how the payload is read.
const UNSUPPORTED_MEMBERS: [&str; 3] = ["b64", "enc", "zip"];

/// Parses an encoded JOSE header. Never panics, whatever the input.
pub fn parse_header(segment: &str) -> Result<JoseHeader, TokenError> {
    let bytes = decode_segment(segment)?;
    let object = parse_object(&bytes)?;

    let alg = match object.get("alg") {
        None => return Err(TokenError::MissingAlgorithm),
        Some(serde_json::Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(TokenError::AlgNone);
        }
        Some(serde_json::Value::String(name)) => name
            .parse::<Algorithm>()
            .map_err(|_| TokenError::UnsupportedAlgorithm)?,
        Some(_) => return Err(TokenError::UnsupportedAlgorithm),
    };

    // No `crit` extension is implemented, so any `crit` member, even an
    // empty or malformed one, names something this verifier cannot honour.
    if object.contains_key("crit") {
        return Err(TokenError::CritNotSupported);
    }
    if KEY_REFERENCE_MEMBERS
        .iter()
        .any(|m| object.contains_key(*m))
    {
        return Err(TokenError::UntrustedKeyHeader);
    }
    if UNSUPPORTED_MEMBERS.iter().any(|m| object.contains_key(*m)) {
        return Err(TokenError::UnsupportedHeader);
    }

    let kid = match object.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::MalformedToken),
    };
    Ok(JoseHeader { alg, kid })
}

/// Parses a JSON object whose top-level members are unique. `serde_json`
/// keeps the last of two equal names, so `{"alg":"RS256","alg":"none"}`
/// would mean different things to different readers; it is rejected.
pub fn parse_object(
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    serde_json::from_slice::<StrictObject>(bytes)
        .map(|object| object.0)
        .map_err(|_| TokenError::MalformedJson)
}

struct StrictObject(serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrictObjectVisitor)
    }
}

struct StrictObjectVisitor;

impl<'de> Visitor<'de> for StrictObjectVisitor {
    type Value = StrictObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with unique member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.contains_key(&name) {
                return Err(serde::de::Error::custom("duplicate member"));
            }
            object.insert(name, value);
        }
        Ok(StrictObject(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_alg_and_kid() {
        let header = parse_header(&encode(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn header_rejections() {
        let cases = [
            (r#"{"alg":"none"}"#, TokenError::AlgNone),
            (r#"{"alg":"None"}"#, TokenError::AlgNone),
            (r#"{"alg":"NONE"}"#, TokenError::AlgNone),
            (r#"{"typ":"JWT"}"#, TokenError::MissingAlgorithm),
            (r#"{"alg":"XS256"}"#, TokenError::UnsupportedAlgorithm),
            (r#"{"alg":256}"#, TokenError::UnsupportedAlgorithm),
            (
                r#"{"alg":"RS256","crit":["x-bind"],"x-bind":1}"#,
                TokenError::CritNotSupported,
            ),
            (
                r#"{"alg":"RS256","crit":["x-bind"]}"#,
                TokenError::CritNotSupported,
            ),
            (r#"{"alg":"RS256","crit":[]}"#, TokenError::CritNotSupported),
            (
                r#"{"alg":"RS256","crit":"x-bind"}"#,
                TokenError::CritNotSupported,
            ),
            (
                r#"{"alg":"RS256","crit":["alg"]}"#,
                TokenError::CritNotSupported,
            ),
            (
                r#"{"alg":"RS256","crit":[null]}"#,
                TokenError::CritNotSupported,
            ),
            (
                r#"{"alg":"RS256","jku":"http://127.0.0.1/"}"#,
                TokenError::UntrustedKeyHeader,
            ),
            (
                r#"{"alg":"RS256","x5u":"http://127.0.0.1/"}"#,
                TokenError::UntrustedKeyHeader,
            ),
            (
                r#"{"alg":"RS256","x5c":["MIIB"]}"#,
                TokenError::UntrustedKeyHeader,
            ),
            (
                r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#,
                TokenError::UntrustedKeyHeader,
            ),
            (
                r#"{"alg":"RS256","b64":false}"#,
                TokenError::UnsupportedHeader,
            ),
            (r#"{"alg":"RS256","kid":7}"#, TokenError::MalformedToken),
            (r#"{"alg":"RS256","alg":"none"}"#, TokenError::MalformedJson),
            (r#"["alg"]"#, TokenError::MalformedJson),
            (r#"{"alg":"RS256""#, TokenError::MalformedJson),
        ];
        for (json, expected) in cases {
            assert_eq!(parse_header(&encode(json)), Err(expected), "{json}");
        }
    }

    #[test]
    fn segment_base64_is_strict() {
        assert_eq!(decode_segment("e30="), Err(TokenError::MalformedBase64));
        assert_eq!(decode_segment("e3+"), Err(TokenError::MalformedBase64));
        assert_eq!(decode_segment("e31"), Err(TokenError::MalformedBase64));
        assert_eq!(decode_segment("e30").unwrap(), b"{}");
    }

    #[test]
    fn split_counts_segments() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b.").is_ok());
        assert_eq!(split("a.b").unwrap_err(), TokenError::MalformedToken);
        assert_eq!(split("a.b.c.d.e").unwrap_err(), TokenError::MalformedToken);
        assert_eq!(split(".b.c").unwrap_err(), TokenError::MalformedToken);
    }

    proptest::proptest! {
        #[test]
        fn header_parser_never_panics(input in ".*") {
            let _ = parse_header(&input);
            let _ = split(&input);
        }

        #[test]
        fn header_parser_never_panics_on_json(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_header(&URL_SAFE_NO_PAD.encode(&bytes));
        }

        #[test]
        fn header_parser_never_panics_on_members(
            alg in proptest::option::of(".{0,12}"),
            kid in proptest::option::of(".{0,12}"),
            extra in "[a-z]{1,5}",
            value in proptest::prelude::any::<i64>(),
        ) {
            let mut object = serde_json::Map::new();
            if let Some(alg) = alg { object.insert("alg".into(), alg.into()); }
            if let Some(kid) = kid { object.insert("kid".into(), kid.into()); }
            object.insert(extra, value.into());
            let json = serde_json::Value::Object(object).to_string();
            let _ = parse_header(&URL_SAFE_NO_PAD.encode(json));
        }
    }
}
