//! Decision logs: one JSON line per decision for auditors.
//!
//! Denies are always logged and allows are sampled. Lines are formatted on
//! the Check path and handed to a writer thread through a bounded queue, so
//! a slow disk or pipe never blocks a Check: when the queue is full the line
//! is dropped and counted.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::Deserialize;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use crate::decision::Decision;
use crate::identity::Identities;
use crate::metrics::Metrics;
use crate::request::Headers;

/// Headers that carry credentials and may never be logged, even when listed.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Maximum bytes of a header value written to a decision log line.
const MAX_LOGGED_HEADER_VALUE: usize = 256;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// `stdout`, `stderr`, `none`, or a file path.
    pub output: String,
    /// Fraction of allows logged, from 0.0 to 1.0. Denies are always logged.
    pub allow_sample_rate: f64,
    /// Request headers whose values are logged (lower case). Credential
    /// headers such as `authorization` and `cookie` are rejected.
    pub headers: Vec<String>,
    /// Lines the writer may fall behind before new lines are dropped.
    pub queue_capacity: usize,
}

impl DecisionLogConfig {
    /// Checks values serde cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.allow_sample_rate) {
            return Err(format!(
                "decision_log.allow_sample_rate: {} is outside 0.0 to 1.0",
                self.allow_sample_rate
            ));
        }
        for name in &self.headers {
            if CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "decision_log.headers: `{name}` carries credentials and is never logged"
                ));
            }
        }
        if self.queue_capacity == 0 {
            return Err("decision_log.queue_capacity: must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A handle to the decision log writer; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    sender: SyncSender<String>,
    allow_threshold: u64,
    headers: Arc<[String]>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// Starts the writer thread. Returns `None` when the output is `none`.
    /// The writer flushes and ends once every clone of the handle is
    /// dropped; join the returned thread to wait for that.
    pub fn start(
        config: &DecisionLogConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<(Self, std::thread::JoinHandle<()>)>, String> {
        config.validate()?;
        let output: Box<dyn Write + Send> = match config.output.as_str() {
            "none" => return Ok(None),
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(path))
                    .map_err(|e| format!("decision_log.output: cannot open `{path}`: {e}"))?;
                Box::new(file)
            }
        };

        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let writer = std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || write_lines(receiver, output))
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;

        let log = DecisionLog {
            sender,
            allow_threshold: (config.allow_sample_rate * u64::MAX as f64) as u64,
            headers: config
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            metrics,
        };
        Ok(Some((log, writer)))
    }

    /// Logs a decision: always for a deny, sampled for an allow.
    pub fn record(
        &self,
        decision: &Decision,
        decision_id: &str,
        identities: &Identities,
        http: Option<&HttpRequest>,
        latency: std::time::Duration,
    ) {
        if decision.allowed && !self.sampled() {
            return;
        }

        let empty = HttpRequest::default();
        let http = http.unwrap_or(&empty);
        // The query and path parameters may carry tokens, session ids or
        // personal data, so the raw path is kept only up to the first of them.
        let path = http.path.split(['?', '#', ';']).next().unwrap_or_default();
        let request_headers = Headers::from_http(http);
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .filter_map(|name| {
                let value = request_headers.get(name)?;
                let end = value.floor_char_boundary(MAX_LOGGED_HEADER_VALUE);
                Some((name.clone(), value.get(..end).unwrap_or_default().into()))
            })
            .collect();
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "decision_id": decision_id,
            "request_id": http.id,
            "decision": decision.decision_str(),
            "rule": decision.rule.as_deref(),
            "reason": decision.reason.as_str(),
            "revision": &*decision.revision,
            "workload": identities.workload.as_ref().map(|w| w.as_str()),
            "subject": identities.user.as_ref().map(|u| u.subject.as_str()),
            "method": http.method,
            "host": http.host,
            "path": path,
            "headers": headers,
            "audit_matches": decision.audit_matches.iter().map(|r| &**r).collect::<Vec<&str>>(),
            "detail": decision.detail.as_deref(),
            "latency_us": u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        });

        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(line.to_string())
        {
            self.metrics.decision_logs_dropped.inc();
        }
    }

    /// Draws from a per-thread xorshift generator, so sampling takes no lock
    /// and touches no shared state.
    fn sampled(&self) -> bool {
        if self.allow_threshold == u64::MAX {
            return true;
        }
        thread_local! {
            static STATE: Cell<u64> = Cell::new(seed());
        }
        let draw = STATE.with(|state| {
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            x
        });
        draw < self.allow_threshold
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// Writes lines until every sender is gone, flushing whenever the queue is
/// empty so lines appear promptly without a flush per line.
fn write_lines(receiver: Receiver<String>, output: Box<dyn Write + Send>) {
    let mut output = std::io::BufWriter::new(output);
    let mut failures: u64 = 0;
    while let Ok(line) = receiver.recv() {
        let mut pending = Some(line);
        while let Some(line) = pending.take() {
            if let Err(error) = writeln!(output, "{line}") {
                failures += 1;
                if failures <= 3 || failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "decision log write failed");
                }
            }
            pending = receiver.try_recv().ok();
        }
        if let Err(error) = output.flush() {
            failures += 1;
            if failures <= 3 || failures.is_power_of_two() {
                tracing::warn!(%error, failures, "decision log flush failed");
            }
        }
    }
    let _ = output.flush();
}
