//! Prometheus metrics. Names, labels and meanings are listed in
//! `docs/operations.md`.
//!
//! Counters on the Check path are created once at start for every label
//! value, so recording a decision is one atomic add and never takes the
//! registry's lock. The latency histogram is lock-free for the same reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::decision::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabels {
    name: String,
    revision: String,
    digest: String,
}

/// Upper bounds of the Check latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// A histogram of durations whose observations are atomic adds. Clones
/// share the same counts.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram {
    inner: Arc<LatencyCounts>,
}

#[derive(Debug, Default)]
struct LatencyCounts {
    /// One count per bucket of `LATENCY_BUCKETS`, then one for `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        let counts = &self.inner;
        if let Some(bucket) = counts.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        counts.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every metric authzd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `[allowed as usize][reason index]`, created at start for each
    /// decision and reason pair that can occur.
    checks: [Vec<Option<Counter>>; 2],
    pub check_latency: LatencyHistogram,
    pub checks_in_flight: Gauge<i64, AtomicI64>,
    pub checks_rejected_overload: Counter,
    jwt_verifications: Family<ResultLabels, Counter>,
    pub jwt_cache_hits: Counter,
    bundle_activations: Family<ResultLabels, Counter>,
    bundle_info: Family<BundleLabels, Gauge>,
    pub decision_logs_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_collectors(Vec::new())
    }

    /// Creates the metrics with extra collectors, which compute their
    /// values when `/metrics` is read.
    pub fn with_collectors(collectors: Vec<Box<dyn Collector>>) -> Metrics {
        let mut registry = Registry::with_prefix("authzd");
        for collector in collectors {
            registry.register_collector(collector);
        }

        let check_family = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Checks answered, by decision and reason",
            check_family.clone(),
        );
        let counters_for = |allowed: bool| -> Vec<Option<Counter>> {
            let decision = if allowed { "allow" } else { "deny" };
            Reason::ALL
                .iter()
                .map(|reason| {
                    let allowing = matches!(reason, Reason::AllowedByRule | Reason::AuditMode);
                    (allowing == allowed).then(|| {
                        check_family
                            .get_or_create(&CheckLabels {
                                decision,
                                reason: reason.as_str(),
                            })
                            .clone()
                    })
                })
                .collect()
        };
        let checks = [counters_for(false), counters_for(true)];

        let check_latency = LatencyHistogram::default();
        registry.register(
            "check_duration_seconds",
            "Time from receiving a CheckRequest to building its response",
            check_latency.clone(),
        );
        let checks_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "checks_in_flight",
            "Checks being decided now",
            checks_in_flight.clone(),
        );
        let checks_rejected_overload = Counter::default();
        registry.register(
            "checks_rejected_overload",
            "Checks rejected with RESOURCE_EXHAUSTED because too many were in flight",
            checks_rejected_overload.clone(),
        );

        let jwt_verifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "jwt_verifications",
            "Bearer token verifications, by result (`valid` or a token error code)",
            jwt_verifications.clone(),
        );
        let jwt_cache_hits = Counter::default();
        registry.register(
            "jwt_cache_hits",
            "Bearer tokens answered from the verified-token cache",
            jwt_cache_hits.clone(),
        );

        let bundle_activations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "bundle_activations",
            "Bundle activation attempts, by result (`activated`, `unchanged`, or `rejected_` and the failed step)",
            bundle_activations.clone(),
        );
        let bundle_info = Family::<BundleLabels, Gauge>::default();
        registry.register(
            "bundle_info",
            "The active bundle: 1 for its name, revision and digest",
            bundle_info.clone(),
        );
        let decision_logs_dropped = Counter::default();
        registry.register(
            "decision_logs_dropped",
            "Decision log lines dropped because the writer fell behind",
            decision_logs_dropped.clone(),
        );

        Metrics {
            registry,
            checks,
            check_latency,
            checks_in_flight,
            checks_rejected_overload,
            jwt_verifications,
            jwt_cache_hits,
            bundle_activations,
            bundle_info,
            decision_logs_dropped,
        }
    }

    /// Counts one answered Check.
    pub fn record_check(&self, allowed: bool, reason: Reason) {
        if let Some(counter) = self
            .checks
            .get(usize::from(allowed))
            .and_then(|counters| counters.get(reason.index()))
            .and_then(Option::as_ref)
        {
            counter.inc();
        }
    }

    /// Counts a token verification; `result` is `valid` or a token error code.
    pub fn record_jwt(&self, result: &'static str) {
        self.jwt_verifications
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn record_activation(&self, result: &'static str) {
        self.bundle_activations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the active bundle info to one series with value 1.
    pub fn set_active_bundle(&self, name: &str, revision: &str, digest: &str) {
        self.bundle_info.clear();
        self.bundle_info
            .get_or_create(&BundleLabels {
                name: name.to_owned(),
                revision: revision.to_owned(),
                digest: digest.to_owned(),
            })
            .set(1);
    }

    /// Encodes every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        text
    }
}

/// Exports JWKS fetch counts of the token verifier as
/// `authzd_jwks_refreshes_total{result}`.
#[derive(Debug)]
pub struct JwksCollector(pub Arc<crate::jwt::JwtVerifier>);

impl Collector for JwksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.key_status();
        let fetches: u64 = statuses.iter().map(|s| s.fetches).sum();
        let failures: u64 = statuses.iter().map(|s| s.failures).sum();

        let mut family = encoder.encode_descriptor(
            "jwks_refreshes",
            "JWKS fetches of remote key sets, by result",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in [
            ("success", fetches.saturating_sub(failures)),
            ("failure", failures),
        ] {
            let labels = ResultLabels { result };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
