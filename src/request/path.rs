//! Request path normalization.
//!
//! Envoy sends the raw request target (`:path`), query included and nothing
//! decoded. The upstream will decode and normalize it in its own way, so any
//! path whose meaning depends on who reads it is rejected here instead of
//! being matched against a rule the upstream would not serve. What remains is
//! normalized the way RFC 3986 reads it: the fragment is dropped, the query is
//! split off, dot segments are removed and unreserved percent-encodings are
//! decoded.

use std::borrow::Cow;

use crate::decision::Reason;

/// Options that loosen path handling. Every option is off by default, and
/// each one accepts a class of paths that is otherwise rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathOptions {
    /// Merge runs of `/` into one instead of rejecting `//` in a path.
    /// Enable it only where Envoy's `merge_slashes` or the upstream does the
    /// same merge.
    pub merge_slashes: bool,
    /// Strip `;` path parameters from each segment instead of rejecting them.
    /// Enable it only where the upstream ignores path parameters in the same
    /// way (for example Java servlet containers).
    pub strip_path_parameters: bool,
}

/// A normalized request path: decoded segments between single slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// `/` followed by the decoded segments joined with `/`.
    path: String,
    /// Byte ranges of each segment in `path`.
    segments: Vec<(u32, u32)>,
}

impl NormalizedPath {
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The decoded segments. A trailing slash yields a final empty segment,
    /// and the root path `/` yields one empty segment.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.segments
            .iter()
            .map(|&(start, end)| self.path.get(start as usize..end as usize).unwrap_or(""))
    }

    pub fn segment(&self, index: usize) -> Option<&str> {
        let &(start, end) = self.segments.get(index)?;
        self.path.get(start as usize..end as usize)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// A raw request target split into its normalized path and its raw query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    pub path: NormalizedPath,
    /// The query without `?`, still percent-encoded; empty when absent.
    pub query: &'a str,
}

/// Maximum accepted request target length in bytes. Envoy's default limit on
/// request headers is 60 KiB, so a longer path cannot come from Envoy.
pub const MAX_PATH_LENGTH: usize = 64 * 1024;

/// Normalizes a raw request target such as `/a/./b%41?x=1#frag`.
pub fn normalize(raw: &str, options: PathOptions) -> Result<RequestTarget<'_>, Reason> {
    if raw.len() > MAX_PATH_LENGTH {
        return Err(Reason::PathTooLong);
    }

    // The fragment never reaches the upstream, so it is dropped before
    // anything else reads the target.
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);
    let (raw_path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));

    if !raw_path.starts_with('/') {
        return Err(Reason::PathNotAbsolute);
    }
    check_raw_bytes(raw_path, options)?;

    let mut segments: Vec<Cow<'_, str>> = Vec::with_capacity(8);
    let mut raw_segments = raw_path.split('/').skip(1).peekable();
    while let Some(raw_segment) = raw_segments.next() {
        let is_last = raw_segments.peek().is_none();

        let raw_segment = if options.strip_path_parameters {
            raw_segment
                .split_once(';')
                .map_or(raw_segment, |(name, _)| name)
        } else {
            raw_segment
        };

        // Only literal dots form dot segments: encoded dots were rejected by
        // `decode_segment`, because readers disagree on whether `%2e%2e` is `..`.
        match raw_segment {
            "." => {
                if is_last {
                    segments.push(Cow::Borrowed(""));
                }
                continue;
            }
            ".." => {
                segments.pop();
                if is_last {
                    segments.push(Cow::Borrowed(""));
                }
                continue;
            }
            "" if !is_last => {
                if options.merge_slashes {
                    continue;
                }
                return Err(Reason::PathEmptySegment);
            }
            _ => {}
        }
        segments.push(decode_segment(raw_segment)?);
    }
    if segments.is_empty() {
        segments.push(Cow::Borrowed(""));
    }

    Ok(RequestTarget {
        path: join_segments(&segments),
        query,
    })
}

/// Rejects bytes whose meaning differs between readers before any decoding.
fn check_raw_bytes(raw_path: &str, options: PathOptions) -> Result<(), Reason> {
    for byte in raw_path.bytes() {
        match byte {
            0x00..=0x1f | 0x7f => return Err(Reason::PathControlCharacter),
            b'\\' => return Err(Reason::PathBackslash),
            b';' if !options.strip_path_parameters => return Err(Reason::PathParameter),
            b' ' => return Err(Reason::PathInvalidCharacter),
            _ => {}
        }
    }
    Ok(())
}

/// Percent-decodes one segment, rejecting encodings that change its meaning.
fn decode_segment(raw: &str) -> Result<Cow<'_, str>, Reason> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }

    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte != b'%' {
            decoded.push(byte);
            index += 1;
            continue;
        }
        let high = bytes.get(index + 1).copied().and_then(hex_value);
        let low = bytes.get(index + 2).copied().and_then(hex_value);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(Reason::PathInvalidEncoding);
        };
        let value = high << 4 | low;
        match value {
            b'/' | b'\\' => return Err(Reason::PathEncodedSlash),
            b'.' => return Err(Reason::PathEncodedDot),
            0x00..=0x1f | 0x7f => return Err(Reason::PathControlCharacter),
            b'%' => return Err(Reason::PathEncodedPercent),
            _ => decoded.push(value),
        }
        index += 3;
    }

    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| Reason::PathInvalidEncoding)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn join_segments(segments: &[Cow<'_, str>]) -> NormalizedPath {
    let length = segments.iter().map(|s| s.len() + 1).sum();
    let mut path = String::with_capacity(length);
    let mut ranges = Vec::with_capacity(segments.len());
    for segment in segments {
        path.push('/');
        let start = path.len();
        path.push_str(segment);
        // `MAX_PATH_LENGTH` keeps every offset far below `u32::MAX`.
        ranges.push((start as u32, path.len() as u32));
    }
    NormalizedPath {
        path,
        segments: ranges,
    }
}

/// Decodes a query string into name and value pairs. `+` is a space, and an
/// invalid percent-encoding is kept as written: the query never selects a
/// rule, so a lenient reading cannot route a request around one.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_component(name), decode_query_component(value))
        })
        .collect()
}

fn decode_query_component(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| {
                let high = bytes.get(index + 1).copied().and_then(hex_value)?;
                let low = bytes.get(index + 2).copied().and_then(hex_value)?;
                Some(high << 4 | low)
            })
            .flatten();
        match (byte, escaped) {
            (_, Some(value)) => {
                decoded.push(value);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (other, None) => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Result<String, Reason> {
        normalize(raw, PathOptions::default()).map(|target| target.path.as_str().to_owned())
    }

    #[test]
    fn normalize_removes_dot_segments() {
        assert_eq!(path("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(path("/a/b/..").unwrap(), "/a/");
        assert_eq!(path("/../../x").unwrap(), "/x");
        assert_eq!(path("/.").unwrap(), "/");
    }

    #[test]
    fn normalize_splits_query_and_drops_fragment() {
        let target = normalize("/a/b?x=1&y=%20#frag", PathOptions::default()).unwrap();
        assert_eq!(target.path.as_str(), "/a/b");
        assert_eq!(target.query, "x=1&y=%20");
        assert_eq!(path("/app1/admin#foo").unwrap(), "/app1/admin");
        assert_eq!(path("/app1/admin?x=1#foo").unwrap(), "/app1/admin");
    }

    #[test]
    fn normalize_decodes_unreserved_characters() {
        assert_eq!(path("/api/%70ing").unwrap(), "/api/ping");
        let target = normalize("/app1/admin%23foo", PathOptions::default()).unwrap();
        assert_eq!(
            target.path.segments().collect::<Vec<_>>(),
            ["app1", "admin#foo"]
        );
    }

    #[test]
    fn normalize_rejects_each_ambiguous_class() {
        let cases = [
            ("/a%2fb", Reason::PathEncodedSlash),
            ("/a%2Fb", Reason::PathEncodedSlash),
            ("/a%5cb", Reason::PathEncodedSlash),
            ("/a/%2e%2e/b", Reason::PathEncodedDot),
            ("/a/%2E/b", Reason::PathEncodedDot),
            ("/a\\b", Reason::PathBackslash),
            ("/a%00b", Reason::PathControlCharacter),
            ("/a\u{0}b", Reason::PathControlCharacter),
            ("/a\tb", Reason::PathControlCharacter),
            ("/a%0ab", Reason::PathControlCharacter),
            ("/public/100%", Reason::PathInvalidEncoding),
            ("/public/%zz", Reason::PathInvalidEncoding),
            ("/a/%c3", Reason::PathInvalidEncoding),
            ("/a/%2541", Reason::PathEncodedPercent),
            ("/reports/..;/internal", Reason::PathParameter),
            ("/a;x=1/b", Reason::PathParameter),
            ("/a//b", Reason::PathEmptySegment),
            ("a/b", Reason::PathNotAbsolute),
            ("", Reason::PathNotAbsolute),
            ("*", Reason::PathNotAbsolute),
        ];
        for (raw, expected) in cases {
            assert_eq!(path(raw), Err(expected), "path {raw:?}");
        }
    }

    #[test]
    fn options_merge_slashes_and_strip_parameters() {
        let options = PathOptions {
            merge_slashes: true,
            strip_path_parameters: true,
        };
        let normalized = |raw| normalize(raw, options).unwrap().path.as_str().to_owned();
        assert_eq!(normalized("/a//b"), "/a/b");
        assert_eq!(normalized("/reports/q1;jsessionid=abc"), "/reports/q1");
        // `..;` becomes `..` once the parameter is stripped, as a servlet
        // container would read it.
        assert_eq!(
            normalized("/reports/..;/internal/ledger"),
            "/internal/ledger"
        );
    }

    #[test]
    fn query_decoding_keeps_invalid_escapes() {
        let pairs = parse_query("q=%25%0D%0A%00&a+b=c%zz&flag");
        assert_eq!(pairs[0], ("q".to_owned(), "%\r\n\0".to_owned()));
        assert_eq!(pairs[1], ("a b".to_owned(), "c%zz".to_owned()));
        assert_eq!(pairs[2], ("flag".to_owned(), String::new()));
    }
}
