//! Server configuration: a YAML file whose every key has a default, so
//! `authzd serve` with no file runs the example bundle on 127.0.0.1:9191.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The configuration `authzd serve` uses when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the Check gRPC listener.
    pub listen: SocketAddr,
    pub bundle: BundleSourceConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSourceConfig {
    /// Directory of the bundle to load at start.
    pub directory: PathBuf,
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
        merge(&mut merged, overrides);
        serde_yaml_ng::from_value(merged).map_err(|e| format!("invalid configuration: {e}"))
    }

    pub fn default_config() -> Config {
        Config::parse("{}").unwrap_or_else(|e| unreachable!("embedded configuration: {e}"))
    }
}

/// Merges `overrides` into `base`, recursing into maps.
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
        (_, serde_yaml_ng::Value::Null) => {}
        (base, overrides) => *base = overrides,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let config = Config::default_config();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9191");
        assert_eq!(config.bundle.directory, PathBuf::from("policies/example"));
    }

    #[test]
    fn unknown_key_is_named() {
        let error = Config::parse("listn: 127.0.0.1:1").unwrap_err();
        assert!(error.contains("listn"), "{error}");
    }

    #[test]
    fn file_overrides_one_key() {
        let config = Config::parse("log: {level: debug}").unwrap();
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.log.format, LogFormat::Text);
    }
}
