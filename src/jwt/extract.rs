//! Finding the bearer token in a request header.
//!
//! NOTE: tokens are read from headers only. A token in a query parameter
//! such as `access_token` is not read, so it neither authenticates nor
//! conflicts with a header token, and it reaches the upstream unchanged.

use super::error::TokenError;

/// What a header value holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Extracted<'a> {
    /// No token for this source, such as `authorization: Basic …` when the
    /// source reads `Bearer` tokens.
    Absent,
    Token(&'a str),
}

/// Reads the token from a header value. With a scheme, the value must be
/// `<scheme> <token>` with the scheme in any case. A value holding more than
/// one credential, such as `Bearer a, Bearer b` or two header lines joined
/// with `,`, is rejected when any of them carries the scheme, so a second
/// token can never be ignored or mixed with the first.
pub fn extract<'a>(
    value: &'a str,
    scheme: Option<&str>,
    max_bytes: usize,
) -> Result<Extracted<'a>, TokenError> {
    let value = value.trim_matches([' ', '\t']);
    let token = match scheme {
        None => {
            if value.is_empty() {
                return Ok(Extracted::Absent);
            }
            if value.contains(',') {
                return Err(TokenError::MultipleTokens);
            }
            value
        }
        Some(scheme) => {
            let mut with_scheme = 0usize;
            let mut parts = 0usize;
            let mut token = "";
            for part in value.split(',') {
                parts += 1;
                if let Some(rest) = strip_scheme(part.trim_matches([' ', '\t']), scheme) {
                    with_scheme += 1;
                    token = rest;
                }
            }
            match (with_scheme, parts) {
                (0, _) => return Ok(Extracted::Absent),
                (1, 1) => token,
                _ => return Err(TokenError::MultipleTokens),
            }
        }
    };

    if token.len() > max_bytes {
        return Err(TokenError::TokenTooLarge);
    }
    // Spaces and control characters are never part of a token. The fold has
    // no early exit, so it compiles to a vectorized scan.
    let has_space_or_control = token.bytes().fold(false, |found, b| found | (b <= b' '));
    if token.is_empty() || has_space_or_control {
        return Err(TokenError::MalformedToken);
    }
    Ok(Extracted::Token(token))
}

/// Strips `<scheme>` and the spaces after it; `None` when the value has
/// another scheme.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let head = value.get(..scheme.len())?;
    let rest = value.get(scheme.len()..)?;
    if !head.eq_ignore_ascii_case(scheme) || !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim_start_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    #[test]
    fn bearer_forms() {
        let cases = [
            ("Bearer abc", Ok(Extracted::Token("abc"))),
            ("bearer   abc", Ok(Extracted::Token("abc"))),
            ("BEARER abc ", Ok(Extracted::Token("abc"))),
            ("Basic dXNlcg==", Ok(Extracted::Absent)),
            ("Bearerabc", Ok(Extracted::Absent)),
            ("", Ok(Extracted::Absent)),
            ("Bearer ", Ok(Extracted::Absent)),
            ("Bearer a, Bearer b", Err(TokenError::MultipleTokens)),
            ("Bearer a,Bearer b", Err(TokenError::MultipleTokens)),
            ("Basic x,Bearer b", Err(TokenError::MultipleTokens)),
            ("Bearer a b", Err(TokenError::MalformedToken)),
            ("Bearer  ", Ok(Extracted::Absent)),
        ];
        for (value, expected) in cases {
            assert_eq!(extract(value, Some("Bearer"), MAX), expected, "{value:?}");
        }
    }

    #[test]
    fn bearer_alone_is_absent() {
        // `Bearer` alone has no space after the scheme once trimmed.
        assert_eq!(
            extract("Bearer", Some("Bearer"), MAX),
            Ok(Extracted::Absent)
        );
    }

    #[test]
    fn plain_header_forms() {
        assert_eq!(extract("abc", None, MAX), Ok(Extracted::Token("abc")));
        assert_eq!(extract("a,b", None, MAX), Err(TokenError::MultipleTokens));
        assert_eq!(extract("", None, MAX), Ok(Extracted::Absent));
    }

    #[test]
    fn long_token_rejected() {
        let value = format!("Bearer {}", "a".repeat(MAX + 1));
        assert_eq!(
            extract(&value, Some("Bearer"), MAX),
            Err(TokenError::TokenTooLarge)
        );
    }
}
