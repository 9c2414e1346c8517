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
//!
//! Upper case in the scheme or the trust domain is rejected, not folded: the
//! standard requires a lower-case trust domain, and go-spiffe, the reference
//! implementation, rejects both.

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
        "trust domain contains `{}`; only lower-case letters, digits, `.`, `-` and `_` are allowed",
        found.escape_debug()
    )]
    BadTrustDomainChar { found: char },
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    #[error("SPIFFE ID path has a `.` or `..` segment")]
    DotSegment,
    #[error("SPIFFE ID path ends with `/`")]
    TrailingSlash,
    #[error(
        "SPIFFE ID path contains `{}`; only letters, digits, `.`, `-` and `_` are allowed",
        found.escape_debug()
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
    use proptest::prelude::*;

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

    #[test]
    fn valid_ids_parse_and_print_back() {
        let longest_id = format!("spiffe://example.org/{}", "a".repeat(MAX_ID_LENGTH - 21));
        let longest_domain = format!("spiffe://{}/a", "d".repeat(MAX_TRUST_DOMAIN_LENGTH));
        let cases: [(&str, &str); 18] = [
            ("trust domain only", "spiffe://example.org"),
            ("kubernetes path", "spiffe://example.org/ns/web/sa/frontend"),
            ("one segment", "spiffe://example.org/a"),
            ("digits in trust domain", "spiffe://123.example"),
            ("dash in trust domain", "spiffe://my-domain.org/a"),
            ("underscore in trust domain", "spiffe://my_domain/a"),
            ("one letter trust domain", "spiffe://a"),
            ("dotted quad trust domain", "spiffe://10.0.0.1/a"),
            ("leading dash in trust domain", "spiffe://-example/a"),
            ("upper case path", "spiffe://example.org/Path/UPPER"),
            ("dots inside segments", "spiffe://example.org/a.b/c..d"),
            ("three dots segment", "spiffe://example.org/..."),
            ("dot prefixed segment", "spiffe://example.org/.hidden"),
            ("dash and underscore path", "spiffe://example.org/a_b-c"),
            ("digit segment", "spiffe://example.org/123"),
            (
                "uuid path",
                "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
            ),
            ("2048 bytes", &longest_id),
            ("255 byte trust domain", &longest_domain),
        ];
        assert_eq!(longest_id.len(), MAX_ID_LENGTH);
        for (name, input) in cases {
            match SpiffeId::parse(input) {
                Ok(id) => assert_eq!(id.to_string(), input, "case `{name}`"),
                Err(e) => panic!("case `{name}`: `{input}` rejected: {e}"),
            }
        }
    }

    #[test]
    fn invalid_ids_are_rejected_with_their_reason() {
        use SpiffeIdError::*;
        let too_long = format!("spiffe://example.org/{}", "a".repeat(MAX_ID_LENGTH - 20));
        let long_domain = format!("spiffe://{}/a", "d".repeat(MAX_TRUST_DOMAIN_LENGTH + 1));
        let cases: [(&str, &str, SpiffeIdError); 42] = [
            ("empty", "", Empty),
            (
                "2049 bytes",
                &too_long,
                TooLong {
                    actual: MAX_ID_LENGTH + 1,
                },
            ),
            (
                "256 byte trust domain",
                &long_domain,
                TrustDomainTooLong { actual: 256 },
            ),
            ("scheme only", "spiffe", WrongScheme),
            ("one slash", "spiffe:/example.org", WrongScheme),
            ("no slashes", "spiffe:example.org", WrongScheme),
            ("upper case scheme", "SPIFFE://example.org", WrongScheme),
            ("mixed case scheme", "Spiffe://example.org", WrongScheme),
            ("http scheme", "http://example.org", WrongScheme),
            ("leading space", " spiffe://example.org", WrongScheme),
            ("no trust domain", "spiffe://", MissingTrustDomain),
            (
                "path without trust domain",
                "spiffe:///path",
                MissingTrustDomain,
            ),
            (
                "upper case trust domain",
                "spiffe://Example.org",
                BadTrustDomainChar { found: 'E' },
            ),
            (
                "port",
                "spiffe://example.org:8080/a",
                BadTrustDomainChar { found: ':' },
            ),
            (
                "user info",
                "spiffe://user@example.org",
                BadTrustDomainChar { found: '@' },
            ),
            (
                "query after trust domain",
                "spiffe://example.org?x",
                BadTrustDomainChar { found: '?' },
            ),
            (
                "fragment after trust domain",
                "spiffe://example.org#x",
                BadTrustDomainChar { found: '#' },
            ),
            (
                "space in trust domain",
                "spiffe://exa mple.org",
                BadTrustDomainChar { found: ' ' },
            ),
            (
                "non-ASCII trust domain",
                "spiffe://ex\u{e4}mple.org",
                BadTrustDomainChar { found: '\u{e4}' },
            ),
            (
                "percent-encoded trust domain",
                "spiffe://example%2eorg",
                BadTrustDomainChar { found: '%' },
            ),
            (
                "IPv6 trust domain",
                "spiffe://[::1]/a",
                BadTrustDomainChar { found: '[' },
            ),
            (
                "NUL in trust domain",
                "spiffe://example.org\0/a",
                BadTrustDomainChar { found: '\0' },
            ),
            ("bare slash path", "spiffe://example.org/", TrailingSlash),
            ("trailing slash", "spiffe://example.org/a/", TrailingSlash),
            (
                "leading empty segment",
                "spiffe://example.org//a",
                EmptySegment,
            ),
            (
                "inner empty segment",
                "spiffe://example.org/a//b",
                EmptySegment,
            ),
            ("dot segment", "spiffe://example.org/.", DotSegment),
            ("dot dot segment", "spiffe://example.org/..", DotSegment),
            (
                "inner dot segment",
                "spiffe://example.org/a/./b",
                DotSegment,
            ),
            (
                "inner dot dot segment",
                "spiffe://example.org/a/../b",
                DotSegment,
            ),
            (
                "space in path",
                "spiffe://example.org/a b",
                BadPathChar { found: ' ' },
            ),
            (
                "percent-encoded path",
                "spiffe://example.org/a%20b",
                BadPathChar { found: '%' },
            ),
            (
                "query",
                "spiffe://example.org/a?x=1",
                BadPathChar { found: '?' },
            ),
            (
                "fragment",
                "spiffe://example.org/a#f",
                BadPathChar { found: '#' },
            ),
            (
                "colon in path",
                "spiffe://example.org/a:b",
                BadPathChar { found: ':' },
            ),
            (
                "at sign in path",
                "spiffe://example.org/a@b",
                BadPathChar { found: '@' },
            ),
            (
                "tilde in path",
                "spiffe://example.org/a~b",
                BadPathChar { found: '~' },
            ),
            (
                "plus in path",
                "spiffe://example.org/a+b",
                BadPathChar { found: '+' },
            ),
            (
                "backslash in path",
                "spiffe://example.org/a\\b",
                BadPathChar { found: '\\' },
            ),
            (
                "newline in path",
                "spiffe://example.org/a\nb",
                BadPathChar { found: '\n' },
            ),
            (
                "non-ASCII path",
                "spiffe://example.org/\u{e4}",
                BadPathChar { found: '\u{e4}' },
            ),
            (
                "semicolon in path",
                "spiffe://example.org/a;b",
                BadPathChar { found: ';' },
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(SpiffeId::parse(input), Err(expected), "case `{name}`");
        }
    }

    #[test]
    fn trust_domain_parses_bare_name_or_id() {
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org/a")
                .unwrap()
                .as_str(),
            "example.org"
        );
        assert!(TrustDomain::parse("Example.org").is_err());
        assert!(TrustDomain::parse("").is_err());
    }

    /// SPIFFE IDs built from the allowed characters only.
    fn valid_id() -> impl Strategy<Value = String> {
        let domain = "[a-z0-9._-]{1,40}";
        let segment = "[a-zA-Z0-9._-]{1,12}".prop_filter("dot segment", |s| s != "." && s != "..");
        (domain, proptest::collection::vec(segment, 0..6)).prop_map(|(domain, segments)| {
            let mut id = format!("spiffe://{domain}");
            for segment in segments {
                id.push('/');
                id.push_str(&segment);
            }
            id
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in ".{0,300}") {
            let _ = SpiffeId::parse(&input);
            let _ = TrustDomain::parse(&input);
        }

        #[test]
        fn parse_never_panics_after_scheme(rest in "[a-zA-Z0-9./:%?#@_-]{0,80}") {
            let _ = SpiffeId::parse(&format!("spiffe://{rest}"));
        }

        #[test]
        fn parsed_id_prints_back(input in ".{0,120}") {
            if let Ok(id) = SpiffeId::parse(&input) {
                prop_assert_eq!(id.to_string(), input);
            }
        }

        #[test]
        fn valid_id_round_trips(input in valid_id()) {
            let id = SpiffeId::parse(&input).unwrap();
            prop_assert_eq!(id.as_str(), input.as_str());
            prop_assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), input);
        }
    }
}
