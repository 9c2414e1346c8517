//! The active bundle, swapped atomically.
//!
//! A Check loads the current snapshot once and keeps it to the end, so a
//! swap during a decision never mixes two bundles.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::policy::Bundle;

/// Holds the active bundle; empty until a first bundle is activated.
#[derive(Debug, Default)]
pub struct BundleStore {
    active: ArcSwapOption<Bundle>,
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
        self.active.swap(Some(bundle))
    }
}
