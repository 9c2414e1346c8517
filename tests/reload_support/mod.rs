//! Helpers shared by the reload tests: two small bundles that decide one
//! fixed request differently, file writers, and bounded waits.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authzd::policy::BundleFiles;
use authzd::reload::signature::{self, SignatureFiles};
use authzd::reload::{Activator, LoadedBundle};
use authzd::store::BundleStore;
use ed25519_dalek::SigningKey;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;

/// The host and path of the fixed request.
pub const HOST: &str = "probe.example.org";
pub const PATH: &str = "/probe";

/// Returns a bundle whose revision is `revision` and that allows the fixed request
/// when `allow` is true and denies it otherwise. Its own test checks that.
pub fn bundle(revision: &str, allow: bool) -> BundleFiles {
    let manifest = format!("format: 1\nname: probe\nrevision: \"{revision}\"\n");
    let (effect, expected) = if allow {
        ("allow", "allow")
    } else {
        ("deny", "deny")
    };
    let rules = format!(
        "rules:\n  - id: probe\n    effect: {effect}\n    hosts: [{HOST}]\n    methods: [GET]\n    paths: [{PATH}]\n  - id: other\n    effect: allow\n    paths: [/other]\ntests:\n  - name: probe is decided\n    request: {{method: GET, host: {HOST}, path: {PATH}}}\n    expect: {{decision: {expected}, rule: probe}}\n"
    );
    let mut files = BundleFiles::default();
    files
        .files
        .insert("bundle.yaml".into(), manifest.into_bytes());
    files.files.insert("rules.yaml".into(), rules.into_bytes());
    files
}

/// Returns a bundle that does not compile because a path pattern is invalid.
pub fn invalid_bundle(revision: &str) -> BundleFiles {
    let mut files = bundle(revision, true);
    files.files.insert(
        "rules.yaml".into(),
        b"rules:\n  - id: broken\n    effect: allow\n    paths: [no-leading-slash]\n".to_vec(),
    );
    files
}

/// Returns a bundle whose own test fails.
pub fn failing_tests_bundle(revision: &str) -> BundleFiles {
    let mut files = bundle(revision, true);
    let rules = String::from_utf8(files.files["rules.yaml"].clone()).unwrap();
    files.files.insert(
        "rules.yaml".into(),
        rules
            .replace("expect: {decision: allow", "expect: {decision: deny")
            .into_bytes(),
    );
    files
}

/// Writes every file of `files` under `dir`, each through a temporary file
/// renamed into place, plus the signature files when given.
pub fn write_dir(dir: &Path, files: &BundleFiles, signature: Option<&SignatureFiles>) {
    let mut all: Vec<(String, Vec<u8>)> = files.files.clone().into_iter().collect();
    if let Some(signature) = signature {
        all.push((signature::MANIFEST_FILE.into(), signature.manifest.clone()));
        all.push((
            signature::SIGNATURE_FILE.into(),
            signature.signature.clone(),
        ));
    }
    for (name, content) in all {
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temporary = dir.join(format!("{name}.tmp"));
        std::fs::write(&temporary, content).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    }
}

/// Builds the fixed request: GET probe.example.org/probe.
pub fn check_request() -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "reload-test".into(),
                    method: "GET".into(),
                    host: HOST.into(),
                    path: PATH.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: [
                        (":method".to_owned(), "GET".to_owned()),
                        (":authority".to_owned(), HOST.to_owned()),
                        (":path".to_owned(), PATH.to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Reads the decision (`allow` or `deny`) and the revision from a response's
/// `dynamic_metadata`.
pub fn decision_and_revision(response: &CheckResponse) -> (String, String) {
    let text = |name: &str| {
        response
            .dynamic_metadata
            .as_ref()
            .and_then(|m| m.fields.get(name))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    (text("decision"), text("revision"))
}

pub fn activator(key: Option<&SigningKey>) -> Arc<Activator> {
    let store = Arc::new(BundleStore::new());
    Arc::new(Activator::new(store, key.map(|k| k.verifying_key())))
}

pub fn loaded(files: BundleFiles, signature: Option<SignatureFiles>) -> LoadedBundle {
    LoadedBundle { files, signature }
}

/// Returns the active bundle's revision, or an empty string before the first.
pub fn active_revision(activator: &Activator) -> String {
    activator
        .store()
        .current()
        .map(|b| b.revision.to_string())
        .unwrap_or_default()
}

/// Waits until `condition` holds, checking every 20 ms, for at most
/// `timeout`. Returns whether it held.
pub async fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generous bound for waits on file events and activations on a busy machine.
pub const WAIT: Duration = Duration::from_secs(30);
