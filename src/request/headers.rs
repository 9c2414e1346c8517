//! Request headers from either form Envoy sends.

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

/// Request headers, read from `headers` or, when Envoy is configured with
/// `encode_raw_headers`, from `header_map`. Names are lower case in both.
#[derive(Debug)]
pub enum Headers<'a> {
    /// The `headers` map: repeated headers already joined with `,`.
    Map(&'a HashMap<String, String>),
    /// The `header_map` list: one entry per header line, raw bytes.
    List(Vec<(Cow<'a, str>, Cow<'a, str>)>),
}

impl<'a> Headers<'a> {
    pub fn from_http(http: &'a HttpRequest) -> Self {
        let Some(header_map) = http.header_map.as_ref().filter(|m| !m.headers.is_empty()) else {
            return Headers::Map(&http.headers);
        };

        let entries = header_map
            .headers
            .iter()
            .map(|header| {
                let name = if header.key.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(header.key.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(header.key.as_str())
                };
                // `raw_value` carries the bytes when Envoy encodes raw headers;
                // invalid UTF-8 is replaced the way Envoy's `headers` map does.
                let value = if header.raw_value.is_empty() {
                    Cow::Borrowed(header.value.as_str())
                } else {
                    String::from_utf8_lossy(&header.raw_value)
                };
                (name, value)
            })
            .collect();
        Headers::List(entries)
    }

    /// Returns the value of a header given its lower-case name. Repeated
    /// headers in `header_map` are joined with `,` as Envoy joins them in
    /// `headers`.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match self {
            Headers::Map(map) => map.get(name).map(|v| Cow::Borrowed(v.as_str())),
            Headers::List(entries) => {
                let mut values = entries
                    .iter()
                    .filter(|(key, _)| key == name)
                    .map(|(_, value)| value.as_ref());
                let first = values.next()?;
                match values.next() {
                    None => Some(Cow::Borrowed(first)),
                    Some(second) => {
                        let mut joined = format!("{first},{second}");
                        for value in values {
                            joined.push(',');
                            joined.push_str(value);
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }

    /// Counts header lines, or map entries in the joined form.
    pub fn len(&self) -> usize {
        match self {
            Headers::Map(map) => map.len(),
            Headers::List(entries) => entries.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over header names and values; repeated names in the list form
    /// appear once per header line.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        match self {
            Headers::Map(map) => Box::new(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Headers::List(entries) => {
                Box::new(entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            }
        }
    }

    /// Sums the bytes of all names and values.
    pub fn total_size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}
