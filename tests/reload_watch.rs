//! Watched file sources with real file-system events: ConfigMap symbolic
//! link swaps, write-then-rename, touches, bursts of partial writes, and
//! concurrent reload triggers.

mod reload_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use authzd::reload::watch::{self, FileBundle, WatchSettings};
use authzd::reload::{Activation, Activator, LoadedBundle, Source};
use reload_support::{
    WAIT, activator, active_revision, bundle, invalid_bundle, wait_for, write_dir,
};

/// Settings that leave reloads to file events alone: the periodic check
/// would otherwise hide a watcher that missed an event.
fn events_only() -> WatchSettings {
    WatchSettings {
        debounce: Duration::from_millis(100),
        check_interval: Duration::from_secs(3600),
    }
}

fn start(
    activator: &Arc<Activator>,
    bundle: FileBundle,
    settings: WatchSettings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(watch::run(activator.clone(), bundle, settings))
}

/// Lays out a ConfigMap volume revision the way the kubelet does: files in
/// a new timestamped directory, a `..data_tmp` link to it renamed over
/// `..data`, then the old directory removed.
fn configmap_update(root: &Path, generation: u32, files: &authzd::policy::BundleFiles) {
    let target = format!("..2026_12_04_00_00_{generation:02}.000000000");
    let target_dir = root.join(&target);
    std::fs::create_dir(&target_dir).unwrap();
    for (name, content) in &files.files {
        std::fs::write(target_dir.join(name), content).unwrap();
    }
    let previous = std::fs::read_link(root.join("..data")).ok();
    std::os::unix::fs::symlink(&target, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    for name in files.files.keys() {
        let link = root.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(root.join(previous)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_swaps_each_activate() {
    let root = tempfile::tempdir().unwrap();
    configmap_update(root.path(), 0, &bundle("cm-0", true));
    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Directory(root.path().into()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "cm-0").await);

    for generation in 1..=3 {
        let revision = format!("cm-{generation}");
        configmap_update(
            root.path(),
            generation,
            &bundle(&revision, generation % 2 == 0),
        );
        assert!(
            wait_for(WAIT, || active_revision(&activator) == revision).await,
            "update {generation} not activated; active is `{}`",
            active_revision(&activator)
        );
    }
    assert_eq!(activator.counters().snapshot().activated, 4);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_into_place_activates() {
    let root = tempfile::tempdir().unwrap();
    write_dir(root.path(), &bundle("plain-a", true), None);
    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Directory(root.path().into()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "plain-a").await);

    let next = bundle("plain-b", false);
    let temporary = root.path().join("bundle.yaml.tmp");
    std::fs::write(&temporary, &next.files["bundle.yaml"]).unwrap();
    std::fs::write(
        root.path().join("rules.yaml.tmp"),
        &next.files["rules.yaml"],
    )
    .unwrap();
    std::fs::rename(
        root.path().join("rules.yaml.tmp"),
        root.path().join("rules.yaml"),
    )
    .unwrap();
    std::fs::rename(&temporary, root.path().join("bundle.yaml")).unwrap();

    assert!(wait_for(WAIT, || active_revision(&activator) == "plain-b").await);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_causes_no_swap() {
    let root = tempfile::tempdir().unwrap();
    let files = bundle("touched", true);
    write_dir(root.path(), &files, None);
    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Directory(root.path().into()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "touched").await);
    let before = activator.counters().snapshot();
    let activated_at = activator.store().status().activated_at;

    // Touch one file and rewrite the other with the same bytes.
    let rules = std::fs::File::options()
        .write(true)
        .open(root.path().join("rules.yaml"))
        .unwrap();
    rules.set_modified(std::time::SystemTime::now()).unwrap();
    drop(rules);
    std::fs::write(root.path().join("bundle.yaml"), &files.files["bundle.yaml"]).unwrap();

    let counters = activator.counters().clone();
    assert!(
        wait_for(WAIT, || counters.unchanged.load(Ordering::Relaxed)
            > before.unchanged)
        .await,
        "the touch caused no reload"
    );
    let after = activator.counters().snapshot();
    assert_eq!(after.activated, before.activated);
    assert_eq!(after.rejected(), 0);
    assert_eq!(activator.store().status().activated_at, activated_at);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_write_burst_ends_on_final() {
    let root = tempfile::tempdir().unwrap();
    write_dir(root.path(), &bundle("burst-0", true), None);
    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Directory(root.path().into()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "burst-0").await);

    // Rewrite the files in place in small pieces, so a reload may read any
    // prefix of them; the last state is a valid bundle.
    for round in 1..=20 {
        let files = bundle(&format!("burst-{round}"), round % 2 == 0);
        for (name, content) in &files.files {
            let mut file = std::fs::File::create(root.path().join(name)).unwrap();
            for piece in content.chunks(16) {
                std::io::Write::write_all(&mut file, piece).unwrap();
                std::io::Write::flush(&mut file).unwrap();
            }
        }
    }

    assert!(
        wait_for(WAIT, || active_revision(&activator) == "burst-20").await,
        "the final state was not activated; active is `{}`",
        active_revision(&activator)
    );
    let active = activator.store().current().unwrap();
    let on_disk = LoadedBundle::read_dir(root.path()).unwrap();
    assert_eq!(*active.digest, on_disk.files.digest());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_edit_after_invalid_recovers() {
    let root = tempfile::tempdir().unwrap();
    write_dir(root.path(), &bundle("good-1", true), None);
    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Directory(root.path().into()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "good-1").await);

    write_dir(root.path(), &invalid_bundle("broken"), None);
    let counters = activator.counters().clone();
    assert!(
        wait_for(WAIT, || counters.rejected_compile.load(Ordering::Relaxed)
            > 0)
        .await
    );
    assert_eq!(active_revision(&activator), "good-1");
    let rejection = activator.store().status().last_rejection.unwrap();
    assert!(
        rejection.source.starts_with("directory:"),
        "{}",
        rejection.source
    );
    assert!(
        rejection.errors[0].contains("invalid path `no-leading-slash`"),
        "{:?}",
        rejection.errors
    );

    write_dir(root.path(), &bundle("good-2", false), None);
    assert!(wait_for(WAIT, || active_revision(&activator) == "good-2").await);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_file_reloads() {
    let root = tempfile::tempdir().unwrap();
    let archive_path = root.path().join("bundle.tar.gz");
    let write_archive = |revision: &str| {
        let bytes = authzd::reload::archive::write_archive(&bundle(revision, true), None).unwrap();
        let temporary = root.path().join(".bundle.tar.gz.tmp");
        std::fs::write(&temporary, bytes).unwrap();
        std::fs::rename(&temporary, &archive_path).unwrap();
    };
    write_archive("archive-1");

    let activator = activator(None);
    let task = start(
        &activator,
        FileBundle::Archive(archive_path.clone()),
        events_only(),
    );
    assert!(wait_for(WAIT, || active_revision(&activator) == "archive-1").await);

    write_archive("archive-2");
    assert!(wait_for(WAIT, || active_revision(&activator) == "archive-2").await);
    task.abort();
}

/// A directory that does not exist yet cannot be watched; the periodic
/// check still loads it once it appears, and then starts the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_loads_later() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("bundle");
    let activator = activator(None);
    let settings = WatchSettings {
        debounce: Duration::from_millis(100),
        check_interval: Duration::from_millis(200),
    };
    let task = start(&activator, FileBundle::Directory(root.clone()), settings);
    let counters = activator.counters().clone();
    assert!(wait_for(WAIT, || counters.rejected_load.load(Ordering::Relaxed) >= 2).await);
    assert!(activator.store().current().is_none());

    std::fs::create_dir(&root).unwrap();
    write_dir(&root, &bundle("late", true), None);
    assert!(wait_for(WAIT, || active_revision(&activator) == "late").await);
    task.abort();
}

/// Two triggers at once, one racing a write of a newer revision: whichever
/// order they run in, the newest revision on disk ends up active.
#[test]
fn concurrent_triggers_keep_newest() {
    let root = tempfile::tempdir().unwrap();
    write_dir(root.path(), &bundle("race-0", true), None);
    let activator = activator(None);
    let source = Source::directory(root.path());
    activator.activate_with(&source, || LoadedBundle::read_dir(root.path()));

    for round in 1..=30 {
        let barrier = Arc::new(Barrier::new(2));
        let racer = {
            let activator = activator.clone();
            let barrier = barrier.clone();
            let source = source.clone();
            let dir = root.path().to_path_buf();
            std::thread::spawn(move || {
                barrier.wait();
                activator.activate_with(&source, || LoadedBundle::read_dir(&dir))
            })
        };
        barrier.wait();
        let revision = format!("race-{round}");
        write_dir(root.path(), &bundle(&revision, round % 2 == 0), None);
        activator.activate_with(&source, || LoadedBundle::read_dir(root.path()));
        racer.join().unwrap();

        assert_eq!(active_revision(&activator), revision, "round {round}");
    }

    write_dir(root.path(), &invalid_bundle("race-invalid"), None);
    let activation = activator.activate_with(&source, || LoadedBundle::read_dir(root.path()));
    assert!(
        matches!(activation, Activation::Rejected { .. }),
        "{activation:?}"
    );
    assert_eq!(active_revision(&activator), "race-30");
}
