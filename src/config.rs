//! Server configuration: a YAML file whose every key has a default, so
//! `authzd serve` with no file runs the example bundle on 127.0.0.1:9191.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::decision_log::DecisionLogConfig;
use crate::tls::TlsConfig;

/// The configuration `authzd serve` uses when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the Check gRPC listener on TCP; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// TLS on the TCP listener.
    pub tls: Option<TlsConfig>,
    pub unix_socket: Option<UnixSocketConfig>,
    pub admin: AdminConfig,
    pub bundle: BundleSourceConfig,
    pub admin_api: AdminApiConfig,
    pub limits: LimitsConfig,
    pub shutdown_timeout_seconds: u64,
    pub decision_log: DecisionLogConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixSocketConfig {
    pub path: PathBuf,
    /// File mode in octal, such as `"0660"`.
    #[serde(default = "default_socket_mode")]
    pub mode: String,
}

fn default_socket_mode() -> String {
    "0660".to_owned()
}

impl UnixSocketConfig {
    pub fn mode_bits(&self) -> Result<u32, String> {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                format!(
                    "unix_socket.mode: `{}` is not an octal file mode such as `0660`",
                    self.mode
                )
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener; `None` disables it.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_in_flight: usize,
    pub max_concurrent_per_connection: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

/// The bundle source and the checks on its bundles; see `docs/reload.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSourceConfig {
    /// The source that delivers bundles.
    pub source: BundleSourceKind,
    /// Bundle directory, watched for changes, when `source` is `directory`.
    pub directory: PathBuf,
    /// Bundle `.tar.gz` file, watched for changes, when `source` is `archive`.
    pub archive: Option<PathBuf>,
    /// Bundle server URL of a `.tar.gz`, when `source` is `http`.
    pub url: Option<String>,
    /// Seconds between digest checks of a file source, or between polls of
    /// the bundle server.
    pub poll_interval_secs: u64,
    /// Milliseconds of quiet after the last file event before a reload.
    pub debounce_ms: u64,
    /// PEM file of CA certificates for the bundle server; the Mozilla roots
    /// when unset.
    pub ca_file: Option<PathBuf>,
    /// Accept an `http://` bundle URL. Off by default: without TLS, anyone
    /// on the network path can serve a bundle unless bundles are signed.
    pub allow_plain_http: bool,
    /// Ed25519 public key (PEM). When set, every bundle from every source,
    /// pushes included, must be signed by this key.
    pub verification_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleSourceKind {
    Directory,
    Archive,
    Http,
    /// No file or HTTP source: bundles arrive only through the admin API.
    Push,
}

/// authzd's gRPC admin API (push, status). Off unless a socket or an mTLS
/// listener is configured; never served on the Check listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminApiConfig {
    /// Unix socket path of the admin API.
    pub socket: Option<PathBuf>,
    /// File mode of the socket, in octal such as `"0600"`.
    pub socket_mode: String,
    pub tls: Option<AdminTlsConfig>,
}

/// The admin API over mTLS, for callers on an allow-list of SPIFFE IDs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca_file: PathBuf,
    /// SPIFFE IDs of the operators allowed to call; every other caller gets
    /// PERMISSION_DENIED.
    pub allowed_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `authzd=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Parses a configuration file over the embedded defaults: keys the file
    /// omits keep their default values, and unknown keys are errors.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut merged: serde_yaml_ng::Value = serde_yaml_ng::from_str(DEFAULT_CONFIG)
            .map_err(|e| format!("embedded default configuration: {e}"))?;
        let overrides: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
        if !overrides.is_null() {
            merge(&mut merged, overrides);
        }
        let config: Config =
            serde_yaml_ng::from_value(merged).map_err(|e| format!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_none() && self.unix_socket.is_none() {
            return Err("listen: no Check listener; set `listen` or `unix_socket`".to_owned());
        }
        if self.tls.is_some() && self.listen.is_none() {
            return Err("tls: TLS applies to the TCP listener, but `listen` is null".to_owned());
        }
        if let Some(socket) = &self.unix_socket {
            socket.mode_bits()?;
        }
        if self.limits.max_in_flight == 0 || self.limits.max_concurrent_per_connection == 0 {
            return Err(
                "limits: `max_in_flight` and `max_concurrent_per_connection` must be at least 1"
                    .to_owned(),
            );
        }
        self.decision_log.validate()
    }

    pub fn default_config() -> Config {
        Config::parse("{}").unwrap_or_else(|e| unreachable!("embedded configuration: {e}"))
    }
}

/// Merges `overrides` into `base`, recursing into maps. An explicit `null`
/// replaces the default, which is how a listener is turned off.
fn merge(base: &mut serde_yaml_ng::Value, overrides: serde_yaml_ng::Value) {
    match (base, overrides) {
        (serde_yaml_ng::Value::Mapping(base), serde_yaml_ng::Value::Mapping(overrides)) => {
            for (key, value) in overrides {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overrides) => *base = overrides,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let config = Config::default_config();
        assert_eq!(
            config.listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9191")
        );
        assert_eq!(config.bundle.directory, PathBuf::from("policies/example"));
        assert_eq!(config.bundle.source, BundleSourceKind::Directory);
        assert_eq!(config.bundle.poll_interval_secs, 30);
        assert!(config.admin_api.socket.is_none());
        assert!(config.admin_api.tls.is_none());
    }

    #[test]
    fn admin_tls_parses() {
        let config = Config::parse(
            "admin_api: {tls: {listen: 127.0.0.1:9443, cert_file: c, key_file: k, client_ca_file: ca, allowed_ids: [spiffe://example.org/ops]}}",
        )
        .unwrap();
        let tls = config.admin_api.tls.unwrap();
        assert_eq!(tls.allowed_ids, vec!["spiffe://example.org/ops".to_owned()]);
    }

    #[test]
    fn unknown_bundle_key_is_named() {
        let error = Config::parse("bundle: {verify_key: k.pem}").unwrap_err();
        assert!(error.contains("verify_key"), "{error}");
    }

    #[test]
    fn unknown_key_is_named() {
        let error = Config::parse("listn: 127.0.0.1:1").unwrap_err();
        assert!(error.contains("listn"), "{error}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mode = Config::parse("unix_socket: {path: /tmp/a.sock, mode: \"999\"}").unwrap_err();
        assert!(mode.contains("unix_socket.mode"), "{mode}");
        let rate = Config::parse("decision_log: {allow_sample_rate: 2.0}").unwrap_err();
        assert!(rate.contains("decision_log.allow_sample_rate"), "{rate}");
        let secret = Config::parse("decision_log: {headers: [Authorization]}").unwrap_err();
        assert!(secret.contains("decision_log.headers"), "{secret}");
        let nested = Config::parse("limits: {max_inflight: 3}").unwrap_err();
        assert!(nested.contains("max_inflight"), "{nested}");
    }

    #[test]
    fn file_overrides_one_key() {
        let config = Config::parse("log: {level: debug}").unwrap();
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.log.format, LogFormat::Text);
    }
}
