//! The `x-forwarded-client-cert` (XFCC) header as Envoy writes it.
//!
//! The header is a `,`-separated list of elements, one per proxy that
//! forwarded the request, oldest first. An element is a `;`-separated list of
//! `key=value` pairs whose keys (`By`, `Hash`, `Cert`, `Chain`, `Subject`,
//! `URI`, `DNS`) are case-insensitive. A value that contains `,`, `;` or `=`
//! is double-quoted, and a `"` inside a quoted value is written `\"`.
//! `Cert` and `Chain` hold URL-encoded PEM.
//!
//! The parser borrows from the header and allocates only for the element
//! list and for quoted values that contain `\"`.

use std::borrow::Cow;

/// The header name, lower case as Envoy passes request headers.
pub const HEADER: &str = "x-forwarded-client-cert";

/// Maximum number of elements, that is of proxies a request may cross.
pub const MAX_ELEMENTS: usize = 32;

/// Maximum number of key-value pairs in one element.
pub const MAX_PAIRS: usize = 64;

/// A reason an XFCC header is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    #[error("the header is empty")]
    Empty,
    #[error("the header has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("an element has more than {MAX_PAIRS} key-value pairs")]
    TooManyPairs,
    #[error("an element is empty")]
    EmptyElement,
    #[error("a key-value pair has no `=`")]
    MissingEquals,
    #[error("a key is empty")]
    EmptyKey,
    #[error("a quoted value has no closing `\"`")]
    UnterminatedQuote,
    #[error("a quoted value is followed by text other than `;` or `,`")]
    TextAfterQuote,
    #[error("an unquoted value contains `\"`")]
    QuoteInValue,
    #[error("an element repeats the key `{0}`, which may appear only once")]
    DuplicateKey(&'static str),
}

/// One XFCC element: what one proxy recorded about its client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccElement<'a> {
    pairs: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> XfccElement<'a> {
    /// URI SANs of the certificate of the proxy that added this element.
    pub fn by(&self) -> impl Iterator<Item = &str> {
        self.values("By")
    }

    /// Hex SHA-256 digest of the client certificate's DER encoding.
    pub fn hash(&self) -> Option<&str> {
        self.values("Hash").next()
    }

    /// Returns the client certificate, URL-encoded PEM.
    pub fn cert(&self) -> Option<&str> {
        self.values("Cert").next()
    }

    /// Returns the client certificate chain, leaf first, URL-encoded PEM.
    pub fn chain(&self) -> Option<&str> {
        self.values("Chain").next()
    }

    /// Returns the client certificate's subject distinguished name.
    pub fn subject(&self) -> Option<&str> {
        self.values("Subject").next()
    }

    /// URI SANs of the client certificate, one pair per SAN.
    pub fn uris(&self) -> impl Iterator<Item = &str> {
        self.values("URI")
    }

    /// DNS SANs of the client certificate, one pair per SAN.
    pub fn dns(&self) -> impl Iterator<Item = &str> {
        self.values("DNS")
    }

    fn values(&self, key: &'static str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }
}

/// Keys that describe one certificate and so may appear once per element.
const SINGLE_KEYS: [&str; 4] = ["Hash", "Cert", "Chain", "Subject"];

/// Parses a whole XFCC header into its elements, oldest first.
///
/// Spaces and tabs around separators are ignored. Unknown keys are kept but
/// have no accessor, so a newer proxy's additions do not break parsing.
pub fn parse(header: &str) -> Result<Vec<XfccElement<'_>>, XfccError> {
    if header.trim_matches([' ', '\t']).is_empty() {
        return Err(XfccError::Empty);
    }

    let mut elements = Vec::with_capacity(1);
    let mut element = XfccElement::default();
    let mut rest = header;

    loop {
        if element.pairs.len() == MAX_PAIRS {
            return Err(XfccError::TooManyPairs);
        }
        let (key, value, separator, after) = parse_pair(rest)?;
        element.pairs.push((key, value));
        rest = after;

        match separator {
            Separator::Pair => continue,
            Separator::Element | Separator::End => {
                check_single_keys(&element)?;
                if elements.len() == MAX_ELEMENTS {
                    return Err(XfccError::TooManyElements);
                }
                elements.push(std::mem::take(&mut element));
                if separator == Separator::End {
                    return Ok(elements);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// `;`: another pair of the same element follows.
    Pair,
    /// `,`: a new element follows.
    Element,
    End,
}

/// Parses one `key=value` pair at the start of `input` and the separator
/// after it. Returns the key, the value, the separator and the remaining text.
fn parse_pair(input: &str) -> Result<(&str, Cow<'_, str>, Separator, &str), XfccError> {
    let input = input.trim_start_matches([' ', '\t']);
    let key_end = input.find(['=', ';', ',']).ok_or_else(|| {
        if input.trim_end_matches([' ', '\t']).is_empty() {
            XfccError::EmptyElement
        } else {
            XfccError::MissingEquals
        }
    })?;
    let (key, after_key) = input.split_at(key_end);
    let Some(value_text) = after_key.strip_prefix('=') else {
        return Err(if key.trim_end_matches([' ', '\t']).is_empty() {
            XfccError::EmptyElement
        } else {
            XfccError::MissingEquals
        });
    };
    let key = key.trim_end_matches([' ', '\t']);
    if key.is_empty() {
        return Err(XfccError::EmptyKey);
    }

    let value_text = value_text.trim_start_matches([' ', '\t']);
    let (value, rest) = if let Some(quoted) = value_text.strip_prefix('"') {
        let (value, after) = parse_quoted(quoted)?;
        let after = after.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with([';', ','])) {
            return Err(XfccError::TextAfterQuote);
        }
        (value, after)
    } else {
        let end = value_text.find([';', ',']).unwrap_or(value_text.len());
        let (value, after) = value_text.split_at(end);
        if value.contains('"') {
            return Err(XfccError::QuoteInValue);
        }
        (Cow::Borrowed(value.trim_end_matches([' ', '\t'])), after)
    };

    let mut chars = rest.chars();
    let separator = match chars.next() {
        None => Separator::End,
        Some(';') => Separator::Pair,
        Some(_) => Separator::Element,
    };
    Ok((key, value, separator, chars.as_str()))
}

/// Reads a quoted value after its opening `"` up to the closing `"`.
/// Only `\"` is an escape. Any other backslash is kept, because Envoy
/// escapes nothing else.
fn parse_quoted(input: &str) -> Result<(Cow<'_, str>, &str), XfccError> {
    let mut unescaped: Option<String> = None;
    let mut start = 0;
    let bytes = input.as_bytes();
    let mut index = 0;

    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'\\' if bytes.get(index + 1) == Some(&b'"') => {
                let buffer = unescaped.get_or_insert_with(String::new);
                buffer.push_str(input.get(start..index).unwrap_or_default());
                buffer.push('"');
                index += 2;
                start = index;
            }
            b'"' => {
                let tail = input.get(start..index).unwrap_or_default();
                let rest = input.get(index + 1..).unwrap_or_default();
                let value = match unescaped {
                    Some(mut buffer) => {
                        buffer.push_str(tail);
                        Cow::Owned(buffer)
                    }
                    None => Cow::Borrowed(tail),
                };
                return Ok((value, rest));
            }
            _ => index += 1,
        }
    }
    Err(XfccError::UnterminatedQuote)
}

fn check_single_keys(element: &XfccElement<'_>) -> Result<(), XfccError> {
    for key in SINGLE_KEYS {
        if element.values(key).nth(1).is_some() {
            return Err(XfccError::DuplicateKey(key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envoy_example_parses() {
        let header = "By=http://frontend.lyft.com;\
            Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;\
            Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";\
            URI=http://testclient.lyft.com";
        let elements = parse(header).unwrap();

        assert_eq!(elements.len(), 1);
        let element = &elements[0];
        assert_eq!(
            element.by().collect::<Vec<_>>(),
            ["http://frontend.lyft.com"]
        );
        assert_eq!(
            element.hash(),
            Some("468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688")
        );
        assert_eq!(
            element.subject(),
            Some("/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client")
        );
        assert_eq!(
            element.uris().collect::<Vec<_>>(),
            ["http://testclient.lyft.com"]
        );
        assert_eq!(element.cert(), None);
    }

    #[test]
    fn elements_split_on_comma() {
        let header = "By=spiffe://a.org/gw;URI=spiffe://a.org/client,\
            By=spiffe://a.org/sidecar;URI=spiffe://a.org/gw;DNS=gw.a.org;DNS=gw2.a.org";
        let elements = parse(header).unwrap();

        assert_eq!(elements.len(), 2);
        assert_eq!(
            elements[0].uris().collect::<Vec<_>>(),
            ["spiffe://a.org/client"]
        );
        assert_eq!(
            elements[1].by().collect::<Vec<_>>(),
            ["spiffe://a.org/sidecar"]
        );
        assert_eq!(
            elements[1].dns().collect::<Vec<_>>(),
            ["gw.a.org", "gw2.a.org"]
        );
    }

    #[test]
    fn quoted_values_keep_separators_and_escapes() {
        let header = r#"Subject="CN=a\, b;c=d \"q\"";URI=spiffe://a.org/x"#;
        let elements = parse(header).unwrap();

        assert_eq!(elements.len(), 1);
        assert_eq!(elements[0].subject(), Some(r#"CN=a\, b;c=d "q""#));
        assert_eq!(elements[0].uris().next(), Some("spiffe://a.org/x"));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let elements = parse("uri=spiffe://a.org/x;hAsH=ab;cert=%2D").unwrap();

        assert_eq!(elements[0].uris().next(), Some("spiffe://a.org/x"));
        assert_eq!(elements[0].hash(), Some("ab"));
        assert_eq!(elements[0].cert(), Some("%2D"));
    }

    #[test]
    fn spaces_around_separators_are_ignored() {
        let elements = parse(" URI=spiffe://a.org/x ; DNS=a.org , URI=spiffe://a.org/y ").unwrap();

        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].uris().next(), Some("spiffe://a.org/x"));
        assert_eq!(elements[0].dns().next(), Some("a.org"));
        assert_eq!(elements[1].uris().next(), Some("spiffe://a.org/y"));
    }

    #[test]
    fn unquoted_value_may_contain_equals() {
        let elements = parse("URI=https://a.org/?x=1").unwrap();
        assert_eq!(elements[0].uris().next(), Some("https://a.org/?x=1"));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let cases = [
            ("empty", "", XfccError::Empty),
            ("blank", "  ", XfccError::Empty),
            ("no equals", "URI", XfccError::MissingEquals),
            ("empty key", "=x", XfccError::EmptyKey),
            ("trailing comma", "URI=a,", XfccError::EmptyElement),
            ("leading comma", ",URI=a", XfccError::EmptyElement),
            ("double semicolon", "URI=a;;DNS=b", XfccError::EmptyElement),
            ("trailing semicolon", "URI=a;", XfccError::EmptyElement),
            ("open quote", "Subject=\"CN=a", XfccError::UnterminatedQuote),
            (
                "escaped last quote",
                r#"Subject="CN=a\""#,
                XfccError::UnterminatedQuote,
            ),
            (
                "text after quote",
                "Subject=\"a\"b",
                XfccError::TextAfterQuote,
            ),
            ("quote inside value", "URI=a\"b", XfccError::QuoteInValue),
            (
                "two hashes",
                "Hash=a;Hash=b",
                XfccError::DuplicateKey("Hash"),
            ),
            (
                "two certs",
                "Cert=a;cert=b",
                XfccError::DuplicateKey("Cert"),
            ),
        ];
        for (name, header, expected) in cases {
            assert_eq!(parse(header), Err(expected), "case `{name}`");
        }
    }

    #[test]
    fn element_and_pair_counts_are_bounded() {
        let many_elements = vec!["URI=a"; MAX_ELEMENTS + 1].join(",");
        assert_eq!(parse(&many_elements), Err(XfccError::TooManyElements));
        let max_elements = vec!["URI=a"; MAX_ELEMENTS].join(",");
        assert_eq!(parse(&max_elements).map(|e| e.len()), Ok(MAX_ELEMENTS));

        let many_pairs = vec!["DNS=a"; MAX_PAIRS + 1].join(";");
        assert_eq!(parse(&many_pairs), Err(XfccError::TooManyPairs));
    }

    proptest! {
        #[test]
        fn parse_never_panics(header in ".{0,400}") {
            let _ = parse(&header);
        }

        #[test]
        fn parse_never_panics_on_xfcc_alphabet(header in r#"[A-Za-z=;,"\\ %:/.-]{0,200}"#) {
            let _ = parse(&header);
        }

        #[test]
        fn quoted_value_round_trips(value in r#"[ -~]{0,60}"#) {
            let header = format!("Subject=\"{}\"", value.replace('"', "\\\""));
            // A value ending in `\` merges with the closing quote, as in Envoy.
            prop_assume!(!value.ends_with('\\'));
            let elements = parse(&header).unwrap();
            prop_assert_eq!(elements[0].subject(), Some(value.as_str()));
        }
    }
}
