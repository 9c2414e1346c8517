//! The active bundle, swapped atomically.
//!
//! A Check loads the current snapshot once and keeps it to the end, so a
//! swap during a decision never mixes two bundles. Status details (source,
//! activation time, last rejection) live beside the snapshot behind a mutex
//! that only activations and status readers take, never a Check.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::policy::Bundle;

/// Activation details that status reports.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// Source of the active bundle, such as a directory path.
    pub source: String,
    pub activated_at: Option<SystemTime>,
    pub last_rejection: Option<Rejection>,
}

/// A bundle that was not activated, and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub source: String,
    pub at: SystemTime,
    /// Digest of the rejected files; empty when they could not be read.
    pub digest: String,
    pub errors: Vec<String>,
}

/// Holds the active bundle; empty until a first bundle is activated.
#[derive(Debug)]
pub struct BundleStore {
    active: ArcSwapOption<Bundle>,
    status: Mutex<StoreStatus>,
    activations: tokio::sync::watch::Sender<u64>,
}

impl Default for BundleStore {
    fn default() -> Self {
        BundleStore {
            active: ArcSwapOption::empty(),
            status: Mutex::new(StoreStatus::default()),
            activations: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl BundleStore {
    pub fn new() -> Self {
        BundleStore::default()
    }

    /// Returns the active bundle, or `None` before the first activation.
    pub fn current(&self) -> Option<Arc<Bundle>> {
        self.active.load_full()
    }

    /// Makes `bundle` the active bundle and returns the one it replaced.
    pub fn activate(&self, bundle: Arc<Bundle>) -> Option<Arc<Bundle>> {
        self.activate_from(bundle, "")
    }

    /// Makes `bundle` the active bundle, recording where it came from.
    pub fn activate_from(&self, bundle: Arc<Bundle>, source: &str) -> Option<Arc<Bundle>> {
        // The swap happens under the status lock, so `snapshot` never pairs
        // a bundle with another bundle's source and time. Checks never take
        // this lock.
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.active.swap(Some(bundle));
        status.source = source.to_owned();
        status.activated_at = Some(SystemTime::now());
        drop(status);
        self.activations.send_modify(|count| *count += 1);
        previous
    }

    /// Returns the active bundle with its status, read together.
    pub fn snapshot(&self) -> (Option<Arc<Bundle>>, StoreStatus) {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        (self.active.load_full(), status.clone())
    }

    /// Records a bundle that was not activated.
    pub fn record_rejection(&self, source: &str, errors: Vec<String>) {
        self.record_rejected_digest(source, "", errors);
    }

    /// Records a bundle that was not activated, with the digest of its
    /// files, or `""` when they could not be read.
    pub fn record_rejected_digest(&self, source: &str, digest: &str, errors: Vec<String>) {
        if let Ok(mut status) = self.status.lock() {
            status.last_rejection = Some(Rejection {
                source: source.to_owned(),
                at: SystemTime::now(),
                digest: digest.to_owned(),
                errors,
            });
        }
    }

    pub fn status(&self) -> StoreStatus {
        self.status
            .lock()
            .map(|status| status.clone())
            .unwrap_or_default()
    }

    /// Returns a receiver that changes on every activation.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.activations.subscribe()
    }
}
