//! Host normalization: lower case, no port, no trailing dot.

use std::borrow::Cow;

use crate::decision::Reason;

/// Maximum host length in bytes, the DNS limit plus room for a port.
const MAX_HOST_LENGTH: usize = 261;

/// Normalizes the `:authority` Envoy sends so that `Payments.Example.ORG.`,
/// `payments.example.org:443` and `payments.example.org` are the same host.
/// An empty host stays empty, and such a request matches only rules without
/// a host constraint.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, Reason> {
    if raw.len() > MAX_HOST_LENGTH {
        return Err(Reason::InvalidHost);
    }

    let name = strip_port(raw)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.ends_with('.') {
        return Err(Reason::InvalidHost);
    }

    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':'));
    if !valid {
        return Err(Reason::InvalidHost);
    }

    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(name))
    }
}

/// Removes `:port` from a host name or a bracketed IPv6 literal.
fn strip_port(raw: &str) -> Result<&str, Reason> {
    if raw.starts_with('[') {
        let end = raw.find(']').ok_or(Reason::InvalidHost)?;
        let (literal, rest) = raw.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) if is_port(port) => Ok(literal),
            None if rest.is_empty() => Ok(literal),
            _ => Err(Reason::InvalidHost),
        };
    }
    match raw.rsplit_once(':') {
        Some((name, port)) if is_port(port) && !name.contains(':') => Ok(name),
        Some(_) => Err(Reason::InvalidHost),
        None => Ok(raw),
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_case_port_and_trailing_dot() {
        for raw in [
            "Payments.Example.ORG",
            "payments.example.org.",
            "payments.example.org:443",
            "PAYMENTS.example.org:8443",
            "payments.example.org.:443",
        ] {
            assert_eq!(
                normalize(raw).unwrap(),
                "payments.example.org",
                "host {raw:?}"
            );
        }
    }

    #[test]
    fn normalize_keeps_ipv6_literals() {
        assert_eq!(normalize("[::1]:9191").unwrap(), "[::1]");
        assert_eq!(normalize("[::1]").unwrap(), "[::1]");
    }

    #[test]
    fn normalize_rejects_malformed_hosts() {
        for raw in [
            "a b",
            "host:port",
            "host:",
            "a..",
            "[::1",
            "evil.com/x",
            "user@host",
            "h\u{0}",
        ] {
            assert_eq!(normalize(raw), Err(Reason::InvalidHost), "host {raw:?}");
        }
    }
}
