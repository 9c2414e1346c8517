//! SPIFFE IDs and trust domains, parsed as the SPIFFE ID standard defines them.
//!
//! A [`SpiffeId`] can only be built by parsing, so code that holds one never
//! checks it again. The rules enforced here:
//!
//! - the scheme is exactly `spiffe` and is followed by `//`;
//! - the trust domain is non-empty and uses only lower-case letters, digits,
//!   `.`, `-` and `_`, which also excludes ports, user info and upper case;
//! - the path is empty or a sequence of `/segment`, where every segment is
//!   non-empty, is not `.` or `..`, and uses only letters, digits, `.`, `-`
//!   and `_` (so no percent-encoding, query or fragment);
//! - the whole ID is at most 2048 bytes and the trust domain at most 255.

use std::fmt;

/// The maximum length of a SPIFFE ID in bytes.
pub const MAX_ID_LENGTH: usize = 2048;

/// The maximum length of a trust domain name in bytes.
pub const MAX_TRUST_DOMAIN_LENGTH: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// Reasons a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is {actual} bytes long, the maximum is {MAX_ID_LENGTH}")]
    TooLong { actual: usize },
    #[error("SPIFFE ID must start with `spiffe://`")]
    WrongScheme,
    #[error("SPIFFE ID has an empty trust domain")]
    MissingTrustDomain,
    #[error("trust domain is {actual} bytes long, the maximum is {MAX_TRUST_DOMAIN_LENGTH}")]
    TrustDomainTooLong { actual: usize },
    #[error(
        "trust domain contains {found:?}; only lower-case letters, digits, `.`, `-` and `_` are allowed"
    )]
    BadTrustDomainChar { found: char },
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    #[error("SPIFFE ID path has a `.` or `..` segment")]
    DotSegment,
    #[error("SPIFFE ID path ends with `/`")]
    TrailingSlash,
    #[error(
        "SPIFFE ID path contains {found:?}; only letters, digits, `.`, `-` and `_` are allowed"
    )]
    BadPathChar { found: char },
}

/// A validated SPIFFE trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(Box<str>);

impl TrustDomain {
    /// Parses a bare trust domain name, or the trust domain of a `spiffe://` ID.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if let Some(rest) = input.strip_prefix(SCHEME_PREFIX) {
            let id = SpiffeId::parse(input)?;
            debug_assert!(rest.starts_with(id.trust_domain()));
            return Ok(TrustDomain(id.trust_domain().into()));
        }
        validate_trust_domain(input)?;
        Ok(TrustDomain(input.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A validated SPIFFE ID such as `spiffe://example.org/ns/web/sa/frontend`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Box<str>,
    /// Byte offset where the path starts (the end of the trust domain).
    path_start: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_ID_LENGTH {
            return Err(SpiffeIdError::TooLong {
                actual: input.len(),
            });
        }
        let Some(rest) = input.strip_prefix(SCHEME_PREFIX) else {
            return Err(SpiffeIdError::WrongScheme);
        };

        let trust_domain_len = rest.find('/').unwrap_or(rest.len());
        let (trust_domain, path) = rest.split_at(trust_domain_len);
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;

        Ok(SpiffeId {
            id: input.into(),
            path_start: SCHEME_PREFIX.len() + trust_domain_len,
        })
    }

    /// The whole ID, `spiffe://` included.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain name, without scheme or path.
    pub fn trust_domain(&self) -> &str {
        self.id
            .get(SCHEME_PREFIX.len()..self.path_start)
            .unwrap_or_default()
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }

    /// The path segments, without slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let path = self.path();
        path.split('/').skip(1).filter(move |_| !path.is_empty())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LENGTH {
        return Err(SpiffeIdError::TrustDomainTooLong { actual: name.len() });
    }
    match name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(found) => Err(SpiffeIdError::BadTrustDomainChar { found }),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }

    // The path starts with `/`, so the first split item is the empty prefix.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(found) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::BadPathChar { found });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/web/sa/frontend").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/web/sa/frontend");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "web", "sa", "frontend"]
        );
    }

    #[test]
    fn trust_domain_only_id_has_no_segments() {
        let id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(id.path(), "");
        assert_eq!(id.segments().count(), 0);
    }
}
