//! File sources: a bundle directory or a `.tar.gz` file, watched for changes
//! with a periodic digest check as a backstop.
//!
//! The watch is on a directory, never on a bundle file: a Kubernetes
//! ConfigMap volume swaps its `..data` symbolic link to a new timestamped
//! directory, and a watch on a file behind the old link would stop firing.
//! Events are debounced, so a burst of writes causes one reload of the final
//! state. A reload that catches a half-written bundle is rejected like any
//! invalid bundle, and the event that ends the burst reloads again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, event::AccessKind, event::AccessMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use super::activation::{Activator, LoadedBundle, Source};
use super::archive::{self, ArchiveLimits};
use crate::policy::BundleError;

/// What a file source reads.
#[derive(Debug, Clone)]
pub enum FileBundle {
    /// A bundle directory, watched recursively.
    Directory(PathBuf),
    /// A `.tar.gz` file; its parent directory is watched.
    Archive(PathBuf),
}

/// Settings of a watched file source.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Quiet time after the last event before a reload.
    pub debounce: Duration,
    /// Interval of the digest check that catches changes the watcher missed.
    pub check_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            debounce: Duration::from_millis(500),
            check_interval: Duration::from_secs(30),
        }
    }
}

impl FileBundle {
    pub fn source(&self) -> Source {
        match self {
            FileBundle::Directory(path) => Source::directory(path),
            FileBundle::Archive(path) => Source::archive(path),
        }
    }

    fn load(&self) -> Result<LoadedBundle, BundleError> {
        match self {
            FileBundle::Directory(path) => LoadedBundle::read_dir(path),
            FileBundle::Archive(path) => {
                archive::read_archive_file(path, &ArchiveLimits::default())
            }
        }
    }

    /// The directory to watch and whether to watch it recursively.
    fn watch_target(&self) -> (PathBuf, RecursiveMode) {
        match self {
            FileBundle::Directory(path) => (path.clone(), RecursiveMode::Recursive),
            FileBundle::Archive(path) => {
                let parent = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (parent, RecursiveMode::NonRecursive)
            }
        }
    }
}

type FileDebouncer = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Loads the bundle once, then reloads it on every debounced change and on
/// every check interval, until the task is dropped.
pub async fn run(activator: Arc<Activator>, bundle: FileBundle, settings: WatchSettings) {
    let source = bundle.source();
    let bundle = Arc::new(bundle);
    let (sender, mut events) = mpsc::unbounded_channel::<DebounceEventResult>();
    let mut watcher = start_watcher(&bundle, &source, &settings, sender.clone());
    tracing::info!(%source, watching = watcher.is_some(), check_interval_ms = settings.check_interval.as_millis() as u64, "bundle source started");

    reload(&activator, &source, &bundle).await;

    let mut check = tokio::time::interval(settings.check_interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let mut watch_errors: u64 = 0;

    loop {
        tokio::select! {
            Some(result) = events.recv() => match result {
                Ok(events) => {
                    if events.iter().any(|event| is_change(&event.kind)) {
                        tracing::debug!(%source, events = events.len(), "bundle files changed");
                        reload(&activator, &source, &bundle).await;
                    }
                }
                Err(errors) => {
                    watch_errors += 1;
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    if watch_errors <= 3 {
                        tracing::warn!(%source, count = watch_errors, errors = errors.join("; "), "file watcher reported errors; reloading to catch up");
                    } else {
                        tracing::debug!(%source, count = watch_errors, errors = errors.join("; "), "file watcher reported errors; reloading to catch up");
                    }
                    reload(&activator, &source, &bundle).await;
                }
            },
            _ = check.tick() => {
                if watcher.is_none() {
                    watcher = start_watcher(&bundle, &source, &settings, sender.clone());
                }
                reload(&activator, &source, &bundle).await;
            }
        }
    }
}

async fn reload(activator: &Arc<Activator>, source: &Source, bundle: &Arc<FileBundle>) {
    let bundle = bundle.clone();
    activator
        .activate_in_background(source.clone(), move || bundle.load())
        .await;
}

/// Starts the debounced watcher. Returns `None`, after logging why, when the
/// directory cannot be watched; the periodic check then still runs and
/// retries the watch.
fn start_watcher(
    bundle: &FileBundle,
    source: &Source,
    settings: &WatchSettings,
    sender: mpsc::UnboundedSender<DebounceEventResult>,
) -> Option<FileDebouncer> {
    let (target, mode) = bundle.watch_target();
    let handler = move |result: DebounceEventResult| {
        // The receiver is gone only when the source task stopped.
        let _ = sender.send(result);
    };
    let mut debouncer = match new_debouncer(settings.debounce, None, handler) {
        Ok(debouncer) => debouncer,
        Err(error) => {
            tracing::warn!(%source, %error, "cannot start the file watcher; relying on the periodic check");
            return None;
        }
    };
    if let Err(error) = debouncer.watch(&target, mode) {
        tracing::warn!(%source, directory = %target.display(), %error, "cannot watch the bundle directory; relying on the periodic check");
        return None;
    }
    Some(debouncer)
}

/// Whether an event can mean changed content. Opening or reading a file,
/// which every reload does itself, cannot.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
