//! The one activation pipeline every bundle source goes through: load,
//! verify the signature, skip if unchanged, compile, run the bundle's own
//! tests, swap, count.
//!
//! Activations are serialized by a mutex held from loading to swapping, so
//! two triggers at once can never leave an older bundle active than the one
//! the later trigger read. The mutex is never taken on the Check path:
//! Checks only load the active snapshot from the lock-free store.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::signature::{self, SignatureFiles};
use crate::policy::{Bundle, BundleError, BundleFiles, testing};
use crate::store::BundleStore;

/// The origin of a bundle, as shown in logs and status, such as
/// `directory:/etc/authzd/bundle` or `push:unix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source(Arc<str>);

impl Source {
    pub fn directory(path: &std::path::Path) -> Self {
        Source(format!("directory:{}", path.display()).into())
    }

    pub fn archive(path: &std::path::Path) -> Self {
        Source(format!("archive:{}", path.display()).into())
    }

    pub fn http(url: &str) -> Self {
        Source(format!("http:{url}").into())
    }

    /// A push through the admin API by `caller`, such as `unix` or a SPIFFE ID.
    pub fn push(caller: &str) -> Self {
        Source(format!("push:{caller}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bundle's files as read from a source, with its signature if it has one.
#[derive(Debug, Clone, Default)]
pub struct LoadedBundle {
    pub files: BundleFiles,
    pub signature: Option<SignatureFiles>,
}

impl LoadedBundle {
    /// Reads a bundle directory and, when present, its signature files.
    pub fn read_dir(root: &std::path::Path) -> Result<Self, BundleError> {
        let files = BundleFiles::read_dir(root)?;
        let signature = signature::read_signature_files(root)?;
        Ok(LoadedBundle { files, signature })
    }

    /// A digest over the files and the signature, so a re-signed bundle
    /// with unchanged files is still seen as new.
    fn content_key(&self, digest: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(digest.as_bytes());
        if let Some(signature) = &self.signature {
            hasher.update((signature.manifest.len() as u64).to_be_bytes());
            hasher.update(&signature.manifest);
            hasher.update(&signature.signature);
        }
        hasher.finalize().into()
    }
}

/// The result of one activation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The bundle is now active.
    Activated {
        name: Arc<str>,
        revision: Arc<str>,
        digest: Arc<str>,
    },
    /// The source delivered what it delivered last time, or the bundle that
    /// is already active; nothing changed.
    Unchanged { digest: String },
    /// The bundle was rejected and the previous one stays active.
    Rejected {
        digest: Option<String>,
        errors: Vec<String>,
        stage: RejectStage,
    },
}

/// The step at which a bundle was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectStage {
    /// The files could not be read or unpacked.
    Load,
    Signature,
    Compile,
    Tests,
}

impl RejectStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectStage::Load => "load",
            RejectStage::Signature => "signature",
            RejectStage::Compile => "compile",
            RejectStage::Tests => "tests",
        }
    }
}

/// Activation attempts by result, for metrics. Counters only grow.
#[derive(Debug, Default)]
pub struct ActivationCounters {
    pub activated: AtomicU64,
    pub unchanged: AtomicU64,
    pub rejected_load: AtomicU64,
    pub rejected_signature: AtomicU64,
    pub rejected_compile: AtomicU64,
    pub rejected_tests: AtomicU64,
}

/// A copy of [`ActivationCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivationCounts {
    pub activated: u64,
    pub unchanged: u64,
    pub rejected_load: u64,
    pub rejected_signature: u64,
    pub rejected_compile: u64,
    pub rejected_tests: u64,
}

impl ActivationCounts {
    pub fn rejected(&self) -> u64 {
        self.rejected_load + self.rejected_signature + self.rejected_compile + self.rejected_tests
    }
}

impl ActivationCounters {
    pub fn snapshot(&self) -> ActivationCounts {
        ActivationCounts {
            activated: self.activated.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            rejected_load: self.rejected_load.load(Ordering::Relaxed),
            rejected_signature: self.rejected_signature.load(Ordering::Relaxed),
            rejected_compile: self.rejected_compile.load(Ordering::Relaxed),
            rejected_tests: self.rejected_tests.load(Ordering::Relaxed),
        }
    }

    fn rejected(&self, stage: RejectStage) -> &AtomicU64 {
        match stage {
            RejectStage::Load => &self.rejected_load,
            RejectStage::Signature => &self.rejected_signature,
            RejectStage::Compile => &self.rejected_compile,
            RejectStage::Tests => &self.rejected_tests,
        }
    }
}

/// How many identical load failures of one source are logged at `warn`
/// before further ones go to `debug` with a count.
const LOAD_FAILURES_AT_WARN: u64 = 3;

#[derive(Debug, Default)]
struct State {
    /// Per source, the content key of what it delivered last, so a source
    /// that delivers the same bytes again causes no work and no log noise.
    seen: HashMap<Source, [u8; 32]>,
    /// Per source, consecutive load failures, for throttled logs.
    load_failures: HashMap<Source, u64>,
}

/// Called after every activation attempt with its result, still under the
/// activation lock, such as to update metrics.
pub type ActivationHook = Arc<dyn Fn(&Activation, &BundleStore) + Send + Sync>;

/// Called with a bundle that passed every check, just before it becomes
/// active, such as to start fetching the key sets its JWT providers name.
pub type PrepareHook = Arc<dyn Fn(&Bundle) + Send + Sync>;

/// Runs activations for every source and records them in the store.
pub struct Activator {
    store: Arc<BundleStore>,
    verifying_key: Option<VerifyingKey>,
    counters: Arc<ActivationCounters>,
    hook: Option<ActivationHook>,
    prepare: Option<PrepareHook>,
    state: Mutex<State>,
}

impl fmt::Debug for Activator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activator")
            .field(
                "verifying_key",
                &self.verifying_key.as_ref().map(signature::key_id),
            )
            .field("counters", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl Activator {
    /// An activator for `store`. With a verifying key, bundles without a
    /// valid signature by that key are rejected.
    pub fn new(store: Arc<BundleStore>, verifying_key: Option<VerifyingKey>) -> Self {
        Activator {
            store,
            verifying_key,
            counters: Arc::default(),
            hook: None,
            prepare: None,
            state: Mutex::default(),
        }
    }

    /// Sets a hook called after every activation attempt.
    pub fn with_hook(mut self, hook: ActivationHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Sets a hook called with each bundle just before it is activated.
    pub fn with_prepare(mut self, prepare: PrepareHook) -> Self {
        self.prepare = Some(prepare);
        self
    }

    pub fn store(&self) -> &Arc<BundleStore> {
        &self.store
    }

    /// The activation counters, shared so a metrics exporter can read them.
    pub fn counters(&self) -> &Arc<ActivationCounters> {
        &self.counters
    }

    /// Loads a bundle with `load` and activates it, both under the
    /// activation lock. Blocks while compiling and testing, so async callers
    /// use [`Activator::activate_in_background`].
    pub fn activate_with(
        &self,
        source: &Source,
        load: impl FnOnce() -> Result<LoadedBundle, BundleError>,
    ) -> Activation {
        // A panic while holding the lock cannot leave the state invalid: it
        // only holds dedup keys and counters, so a poisoned lock is reused.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let activation = self.run_pipeline(&mut state, source, load);
        if let Some(hook) = &self.hook {
            hook(&activation, &self.store);
        }
        activation
    }

    fn run_pipeline(
        &self,
        state: &mut State,
        source: &Source,
        load: impl FnOnce() -> Result<LoadedBundle, BundleError>,
    ) -> Activation {
        let started = Instant::now();

        let loaded = match load() {
            Ok(loaded) => loaded,
            Err(error) => return self.reject_load(state, source, error.errors),
        };
        if let Some(failures) = state.load_failures.remove(source)
            && failures > 0
        {
            tracing::info!(%source, failures, "bundle source readable again");
        }

        let digest = loaded.files.digest();
        let key = loaded.content_key(&digest);
        if state.seen.get(source) == Some(&key) {
            return self.unchanged(source, digest, "source delivered the same bundle again");
        }
        state.seen.insert(source.clone(), key);

        if let Some(verifying_key) = &self.verifying_key
            && let Err(errors) =
                signature::verify(&loaded.files, loaded.signature.as_ref(), verifying_key)
        {
            return self.reject(source, Some(digest), errors, RejectStage::Signature);
        }

        if let Some(active) = self.store.current()
            && *active.digest == digest
        {
            return self.unchanged(source, digest, "bundle is already active");
        }

        let bundle = match Bundle::compile(&loaded.files) {
            Ok(bundle) => bundle,
            Err(error) => {
                return self.reject(source, Some(digest), error.errors, RejectStage::Compile);
            }
        };

        let failures = failed_tests(&bundle);
        if !failures.is_empty() {
            return self.reject(source, Some(digest), failures, RejectStage::Tests);
        }

        if let Some(prepare) = &self.prepare {
            prepare(&bundle);
        }
        let bundle = Arc::new(bundle);
        let previous = self.store.activate_from(bundle.clone(), source.as_str());
        self.counters.activated.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            %source,
            bundle = &*bundle.name,
            revision = &*bundle.revision,
            digest = &*bundle.digest,
            previous_revision = previous.as_ref().map_or("", |p| &*p.revision),
            rules = bundle.rules.len(),
            tests = bundle.tests.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "bundle activated"
        );
        Activation::Activated {
            name: bundle.name.clone(),
            revision: bundle.revision.clone(),
            digest: bundle.digest.clone(),
        }
    }

    /// Activates already loaded files, such as a pushed archive.
    pub fn activate(&self, source: &Source, loaded: LoadedBundle) -> Activation {
        self.activate_with(source, || Ok(loaded))
    }

    /// Runs [`Activator::activate_with`] on the blocking thread pool, so
    /// compiling a large bundle never stalls the async workers.
    pub async fn activate_in_background<F>(self: &Arc<Self>, source: Source, load: F) -> Activation
    where
        F: FnOnce() -> Result<LoadedBundle, BundleError> + Send + 'static,
    {
        let activator = self.clone();
        let task_source = source.clone();
        let task = tokio::task::spawn_blocking(move || activator.activate_with(&task_source, load));
        match task.await {
            Ok(activation) => activation,
            Err(error) => {
                let errors = vec![format!("activation task failed: {error}")];
                self.reject(&source, None, errors, RejectStage::Load)
            }
        }
    }

    fn unchanged(&self, source: &Source, digest: String, reason: &str) -> Activation {
        self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%source, digest, reason, "bundle unchanged");
        Activation::Unchanged { digest }
    }

    /// Rejects a bundle that could not be read. Repeated failures of one
    /// source are logged at `warn` a few times, then at `debug` with a count.
    fn reject_load(&self, state: &mut State, source: &Source, errors: Vec<String>) -> Activation {
        let failures = state.load_failures.entry(source.clone()).or_insert(0);
        *failures += 1;
        let failures = *failures;
        // The next successful read must be processed even if it returns
        // the bytes seen before the failure.
        state.seen.remove(source);

        self.counters
            .rejected(RejectStage::Load)
            .fetch_add(1, Ordering::Relaxed);
        self.record_rejection(source, None, &errors);
        let joined = errors.join("; ");
        if failures <= LOAD_FAILURES_AT_WARN {
            tracing::warn!(%source, failures, errors = joined, "cannot load bundle; the active bundle stays");
        } else {
            tracing::debug!(%source, failures, errors = joined, "cannot load bundle; the active bundle stays");
        }
        Activation::Rejected {
            digest: None,
            errors,
            stage: RejectStage::Load,
        }
    }

    fn reject(
        &self,
        source: &Source,
        digest: Option<String>,
        errors: Vec<String>,
        stage: RejectStage,
    ) -> Activation {
        self.counters
            .rejected(stage)
            .fetch_add(1, Ordering::Relaxed);
        self.record_rejection(source, digest.clone(), &errors);
        tracing::warn!(
            %source,
            digest = digest.as_deref().unwrap_or(""),
            stage = stage.as_str(),
            active_revision = self.store.current().map_or_else(String::new, |b| b.revision.to_string()),
            errors = errors.join("; "),
            "bundle rejected; the active bundle stays"
        );
        Activation::Rejected {
            digest,
            errors,
            stage,
        }
    }

    fn record_rejection(&self, source: &Source, digest: Option<String>, errors: &[String]) {
        self.store.record_rejected_digest(
            source.as_str(),
            digest.as_deref().unwrap_or(""),
            errors.to_vec(),
        );
    }
}

/// Runs the bundle's own tests and returns one message per failing test.
fn failed_tests(bundle: &Bundle) -> Vec<String> {
    testing::run_tests(bundle)
        .into_iter()
        .filter(|result| !result.passed())
        .map(|result| {
            format!(
                "{}: test `{}` failed: {}",
                result.file,
                result.name,
                result.failures.join("; ")
            )
        })
        .collect()
}
