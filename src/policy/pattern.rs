//! Compiled host, path and principal patterns.
//!
//! Patterns are matched segment by segment against normalized input. No
//! pattern is ever turned into a regular expression, so characters such as
//! `.`, `+`, `(` or `$` in a pattern only ever match themselves.

use crate::request::NormalizedPath;
use crate::spiffe::SpiffeId;

/// A host pattern: an exact name, `*.suffix` for any subdomain, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(Box<str>),
    /// Matches hosts that end with this suffix, which starts with `.`.
    Suffix(Box<str>),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        let (suffix, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let valid = !name.is_empty()
            && !name.ends_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(format!(
                "invalid host `{text}`: expected a host name such as `api.example.org`, `*.example.org` or `*`"
            ));
        }
        if name.contains(':') {
            return Err(format!(
                "invalid host `{text}`: hosts are matched without a port"
            ));
        }

        let name = name.to_ascii_lowercase();
        Ok(if suffix {
            HostPattern::Suffix(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(name) => host == &**name,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
        }
    }
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<str>),
    /// `{name}`: one non-empty segment, available to conditions as `path.name`.
    Variable(Box<str>),
    /// `*`: one non-empty segment.
    Wildcard,
}

/// A path pattern such as `/tenants/{tenant}/orders/{id}` or `/public/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub source: Box<str>,
    pub segments: Vec<Segment>,
    /// The pattern ends in `/**`: any number of further segments, none included.
    pub rest: bool,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!(
                "invalid path `{text}`: a path pattern starts with `/`"
            ));
        };

        let mut segments = Vec::new();
        let mut rest = false;
        let mut variables: Vec<&str> = Vec::new();
        let raw_segments: Vec<&str> = body.split('/').collect();
        let last = raw_segments.len() - 1;

        for (index, raw) in raw_segments.iter().copied().enumerate() {
            if raw == "**" {
                if index != last {
                    return Err(format!(
                        "invalid path `{text}`: `**` may only be the last segment"
                    ));
                }
                rest = true;
                continue;
            }
            if raw == "*" {
                segments.push(Segment::Wildcard);
                continue;
            }
            if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if !is_identifier(inner) {
                    return Err(format!(
                        "invalid path `{text}`: variable `{{{inner}}}` must be a name of letters, digits and `_` that does not start with a digit"
                    ));
                }
                if variables.contains(&inner) {
                    return Err(format!(
                        "invalid path `{text}`: variable `{{{inner}}}` appears twice"
                    ));
                }
                variables.push(inner);
                segments.push(Segment::Variable(inner.into()));
                continue;
            }
            check_literal_segment(text, raw, index == last)?;
            segments.push(Segment::Literal(raw.into()));
        }

        Ok(PathPattern {
            source: text.into(),
            segments,
            rest,
        })
    }

    pub fn matches(&self, path: &NormalizedPath) -> bool {
        let count = path.segment_count();
        let fixed = self.segments.len();
        if count < fixed || (!self.rest && count != fixed) {
            return false;
        }
        self.segments
            .iter()
            .zip(path.segments())
            .all(|(pattern, actual)| match pattern {
                Segment::Literal(literal) => &**literal == actual,
                Segment::Variable(_) | Segment::Wildcard => !actual.is_empty(),
            })
    }

    /// The variable names with their segment positions.
    pub fn variables(&self) -> impl Iterator<Item = (usize, &str)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                Segment::Variable(name) => Some((index, &**name)),
                _ => None,
            })
    }
}

fn check_literal_segment(text: &str, raw: &str, is_last: bool) -> Result<(), String> {
    if raw.is_empty() && !is_last {
        return Err(format!(
            "invalid path `{text}`: `//` never matches, because request paths with `//` are rejected or merged"
        ));
    }
    if raw == "." || raw == ".." {
        return Err(format!(
            "invalid path `{text}`: `.` and `..` segments never match, because request paths are normalized"
        ));
    }
    if raw.contains(['{', '}']) {
        return Err(format!(
            "invalid path `{text}`: segment `{raw}` mixes a variable with text; a variable is a whole segment such as `{{id}}`"
        ));
    }
    if raw.contains('*') {
        return Err(format!(
            "invalid path `{text}`: segment `{raw}` mixes `*` with text; `*` and `**` are whole segments"
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| c.is_control() || matches!(c, '%' | '?' | '#' | ';' | '\\' | ' '))
    {
        return Err(format!(
            "invalid path `{text}`: {bad:?} cannot appear in a pattern; patterns are matched against decoded paths without query"
        ));
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A workload principal pattern: an exact SPIFFE ID; a SPIFFE ID whose path
/// segments may be `*` (one segment) or end with `**` (one or more
/// segments); or `*` alone for any workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    Any,
    Exact(SpiffeId),
    Segments {
        trust_domain: Box<str>,
        segments: Vec<Option<Box<str>>>,
        rest: bool,
    },
}

impl PrincipalPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(PrincipalPattern::Any);
        }
        if !text.split('/').any(|s| s == "*" || s == "**") {
            return SpiffeId::parse(text)
                .map(PrincipalPattern::Exact)
                .map_err(|e| format!("invalid principal `{text}`: {e}"));
        }

        // Validate the pattern as an ID with every wildcard replaced by a
        // valid segment, so the literal parts obey the SPIFFE ID rules.
        let placeholder: Vec<&str> = text
            .split('/')
            .map(|s| if s == "*" || s == "**" { "x" } else { s })
            .collect();
        let id = SpiffeId::parse(&placeholder.join("/"))
            .map_err(|e| format!("invalid principal `{text}`: {e}"))?;

        let raw_segments: Vec<&str> = text
            .get("spiffe://".len() + id.trust_domain().len()..)
            .unwrap_or_default()
            .split('/')
            .skip(1)
            .collect();
        let last = raw_segments.len().saturating_sub(1);
        let mut segments = Vec::with_capacity(raw_segments.len());
        let mut rest = false;
        for (index, raw) in raw_segments.into_iter().enumerate() {
            match raw {
                "**" if index == last => rest = true,
                "**" => {
                    return Err(format!(
                        "invalid principal `{text}`: `**` may only be the last segment"
                    ));
                }
                "*" => segments.push(None),
                literal => segments.push(Some(literal.into())),
            }
        }

        Ok(PrincipalPattern::Segments {
            trust_domain: id.trust_domain().into(),
            segments,
            rest,
        })
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Exact(expected) => expected == id,
            PrincipalPattern::Segments {
                trust_domain,
                segments,
                rest,
            } => {
                if id.trust_domain() != &**trust_domain {
                    return false;
                }
                let mut actual = id.segments();
                for expected in segments {
                    match (expected, actual.next()) {
                        (_, None) => return false,
                        (Some(literal), Some(segment)) if &**literal != segment => return false,
                        _ => {}
                    }
                }
                let remaining = actual.count();
                if *rest {
                    remaining >= 1
                } else {
                    remaining == 0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::path::{PathOptions, normalize};

    fn path(raw: &str) -> NormalizedPath {
        normalize(raw, PathOptions::default()).unwrap().path
    }

    #[test]
    fn template_matches_whole_segments() {
        let pattern = PathPattern::parse("/tenants/{tenant}/orders/{id}").unwrap();
        assert!(pattern.matches(&path("/tenants/acme/orders/42")));
        assert!(!pattern.matches(&path("/tenants/acme/orders/")));
        assert!(!pattern.matches(&path("/tenants/acme/orders/42/items")));
        assert_eq!(
            pattern.variables().collect::<Vec<_>>(),
            [(1, "tenant"), (3, "id")]
        );
    }

    #[test]
    fn double_star_matches_prefix_and_below() {
        let pattern = PathPattern::parse("/admin/**").unwrap();
        assert!(pattern.matches(&path("/admin")));
        assert!(pattern.matches(&path("/admin/")));
        assert!(pattern.matches(&path("/admin/users/1")));
        assert!(!pattern.matches(&path("/administrator")));
    }

    #[test]
    fn path_pattern_errors_name_the_problem() {
        for (text, expected) in [
            ("admin", "starts with `/`"),
            ("/a/**/b", "`**` may only be the last segment"),
            ("/t/{1x}", "variable `{1x}`"),
            ("/t/{id}/{id}", "appears twice"),
            ("/t/x{id}", "mixes a variable"),
            ("/a/../b", "`.` and `..`"),
            ("/a%2Fb", "'%' cannot appear"),
        ] {
            let error = PathPattern::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn principal_wildcards_are_whole_segments() {
        let id = |s| SpiffeId::parse(s).unwrap();
        let any_api = PrincipalPattern::parse("spiffe://example.org/ns/*/sa/api.v1").unwrap();
        assert!(any_api.matches(&id("spiffe://example.org/ns/team-a/sa/api.v1")));
        assert!(!any_api.matches(&id("spiffe://example.org/ns/team-a/sa/apixv1")));
        assert!(!any_api.matches(&id("spiffe://example.org/ns/a/b/sa/api.v1")));

        let namespace = PrincipalPattern::parse("spiffe://example.org/ns/billing/**").unwrap();
        assert!(namespace.matches(&id("spiffe://example.org/ns/billing/sa/api")));
        assert!(!namespace.matches(&id("spiffe://example.org/ns/billing")));
        assert!(!namespace.matches(&id("spiffe://example.org/ns/billingx/sa/api")));
        assert!(!namespace.matches(&id("spiffe://other.org/ns/billing/sa/api")));
    }

    #[test]
    fn host_patterns_match_exact_and_suffix() {
        let exact = HostPattern::parse("Orders.Example.org").unwrap();
        assert!(exact.matches("orders.example.org"));
        let suffix = HostPattern::parse("*.example.org").unwrap();
        assert!(suffix.matches("a.example.org"));
        assert!(!suffix.matches("example.org"));
        assert!(!suffix.matches("evilexample.org"));
    }
}
