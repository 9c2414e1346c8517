//! The live key set of a provider: fixed for keys written in the bundle,
//! fetched and refreshed in the background for a remote JWKS.
//!
//! A Check only reads the current set through `ArcSwap`; it never waits for
//! a fetch. A token naming an unknown `kid` wakes the fetcher, which refetches
//! no sooner than `unknown_kid_min_seconds` after its previous fetch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::jwks::KeySet;
use super::provider::{JwksSource, RemoteJwks};

/// Largest JWKS response read, in bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Refresh interval when the response has no `Cache-Control: max-age` and
/// no fixed interval is configured, before clamping to the configured bounds.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Consecutive fetch failures logged at warn; later ones are logged at debug.
const WARN_FAILURES: u64 = 3;

/// A key set and the generation it belongs to.
#[derive(Debug)]
pub struct Loaded {
    /// `None` until a remote JWKS has been fetched once.
    pub keys: Option<Arc<KeySet>>,
    pub generation: u64,
}

/// Fetch counters of a remote key set, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The JWKS URL, or empty for keys in the bundle.
    pub url: String,
    pub keys: usize,
    pub generation: u64,
    pub fetches: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
}

/// The current keys of one JWKS source.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwap<Loaded>,
    generation: AtomicU64,
    remote: Option<RemoteJwks>,
    wake: Arc<Notify>,
    refetch_requested: AtomicBool,
    fetches: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
}

impl Drop for KeyStore {
    fn drop(&mut self) {
        // Wakes the fetcher so that it sees the store is gone and exits.
        self.wake.notify_one();
    }
}

impl KeyStore {
    /// Creates the store for `source`. A remote source starts its fetcher on
    /// the current Tokio runtime; without one, its keys stay unavailable.
    pub fn start(source: &JwksSource) -> Arc<KeyStore> {
        let (keys, remote) = match source {
            JwksSource::Static(keys) => (Some(keys.clone()), None),
            JwksSource::Remote(remote) => (None, Some(remote.clone())),
        };
        let store = Arc::new(KeyStore {
            current: ArcSwap::from_pointee(Loaded {
                keys,
                generation: 1,
            }),
            generation: AtomicU64::new(1),
            remote: remote.clone(),
            wake: Arc::new(Notify::new()),
            refetch_requested: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
        });

        if let Some(remote) = remote {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let fetcher = Fetcher {
                        store: Arc::downgrade(&store),
                        wake: store.wake.clone(),
                        remote,
                    };
                    runtime.spawn(fetcher.run());
                }
                Err(_) => tracing::error!(
                    url = %remote.url,
                    "no async runtime to fetch the JWKS; tokens of this provider are rejected"
                ),
            }
        }
        store
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Loaded>> {
        self.current.load()
    }

    /// The generation of the current key set; it changes whenever the keys do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks the fetcher to refetch a remote JWKS because a token named a
    /// `kid` it does not list. Returns at once; repeated calls collapse.
    pub fn request_refetch(&self) {
        if self.remote.is_some() && !self.refetch_requested.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    pub fn status(&self) -> KeyStatus {
        let loaded = self.current.load();
        KeyStatus {
            url: self
                .remote
                .as_ref()
                .map(|r| r.url.clone())
                .unwrap_or_default(),
            keys: loaded.keys.as_ref().map_or(0, |k| k.len()),
            generation: loaded.generation,
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
        }
    }

    /// Installs a fetched key set unless it equals the current one, so an
    /// unchanged refetch keeps the generation and the cached tokens.
    fn install(&self, keys: KeySet) -> bool {
        let current = self.current.load();
        if current
            .keys
            .as_ref()
            .is_some_and(|k| k.digest() == keys.digest())
        {
            return false;
        }
        let generation = current.generation + 1;
        self.current.store(Arc::new(Loaded {
            keys: Some(Arc::new(keys)),
            generation,
        }));
        self.generation.store(generation, Ordering::Release);
        true
    }
}

/// The background task of one remote JWKS.
struct Fetcher {
    store: Weak<KeyStore>,
    wake: Arc<Notify>,
    remote: RemoteJwks,
}

impl Fetcher {
    async fn run(self) {
        let client = match http_client(&self.remote) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(url = %self.remote.url, error = %e, "cannot build the JWKS client");
                return;
            }
        };
        let refresh = &self.remote.refresh;
        let min_unknown_kid = Duration::from_secs(refresh.unknown_kid_min_seconds);

        loop {
            let Some(store) = self.store.upgrade() else {
                return;
            };
            store.refetch_requested.store(false, Ordering::Release);
            let started = Instant::now();
            let wait = match fetch(&client, &self.remote.url).await {
                Ok((keys, max_age)) => {
                    self.succeeded(&store, keys);
                    self.refresh_interval(max_age)
                }
                Err(error) => self.failed(&store, &error),
            };
            drop(store);

            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    if self.store.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep_until(started + min_unknown_kid).await;
                }
            }
        }
    }

    fn succeeded(&self, store: &KeyStore, parsed: super::jwks::Parsed) {
        store.fetches.fetch_add(1, Ordering::Relaxed);
        let failures = store.consecutive_failures.swap(0, Ordering::Relaxed);
        for skipped in &parsed.skipped {
            tracing::debug!(url = %self.remote.url, key = %skipped, "JWKS key skipped");
        }
        let keys = parsed.keys.len();
        if store.install(parsed.keys) {
            tracing::info!(url = %self.remote.url, keys, generation = store.generation(), "JWKS updated");
        } else if failures > 0 {
            tracing::info!(url = %self.remote.url, failures, "JWKS fetch recovered");
        }
    }

    /// Records a failed fetch, keeping the current keys, and returns the
    /// delay before the next attempt: 1 s doubling up to the refresh interval.
    fn failed(&self, store: &KeyStore, error: &str) -> Duration {
        store.fetches.fetch_add(1, Ordering::Relaxed);
        store.failures.fetch_add(1, Ordering::Relaxed);
        let failures = store.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let has_keys = store.current.load().keys.is_some();
        if failures <= WARN_FAILURES {
            tracing::warn!(url = %self.remote.url, error, failures, keeping_keys = has_keys, "JWKS fetch failed");
        } else {
            tracing::debug!(url = %self.remote.url, error, failures, keeping_keys = has_keys, "JWKS fetch failed");
        }
        let ceiling = self.refresh_interval(None);
        let backoff = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
        backoff.min(ceiling)
    }

    fn refresh_interval(&self, max_age: Option<u64>) -> Duration {
        let refresh = &self.remote.refresh;
        if let Some(fixed) = refresh.interval_seconds {
            return Duration::from_secs(fixed);
        }
        let seconds = max_age.unwrap_or(DEFAULT_REFRESH.as_secs());
        Duration::from_secs(seconds.clamp(refresh.min_seconds, refresh.max_seconds))
    }
}

fn http_client(remote: &RemoteJwks) -> Result<reqwest::Client, reqwest::Error> {
    let timeout = Duration::from_secs(remote.refresh.timeout_seconds);
    reqwest::Client::builder()
        // A redirect could lead from https to http or to another host.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("authzd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetches and parses a JWKS, returning it with the response's max-age.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(super::jwks::Parsed, Option<u64>), String> {
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let max_age = response
        .headers()
        .get_all("cache-control")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(max_age);

    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("response exceeds {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let parsed = KeySet::parse(&body)?;
    Ok((parsed, max_age))
}

/// Reads `max-age` from a `Cache-Control` value; `no-cache` and `no-store`
/// count as zero, which the configured minimum then raises.
pub fn max_age(value: &str) -> Option<u64> {
    value.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(0);
        }
        let (name, seconds) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        seconds.trim().trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_forms() {
        assert_eq!(max_age("public, max-age=600"), Some(600));
        assert_eq!(max_age("max-age=\"30\""), Some(30));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=-1"), None);
    }
}
