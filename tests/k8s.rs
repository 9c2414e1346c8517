//! The Kubernetes manifests under `k8s/`: each parses, the core kinds pass
//! `kubernetes-validate --strict`, the Istio kinds pass the JSON schemas in
//! `k8s/schemas/`, and what they configure works with this authzd.
//!
//! The validators come from PyPI, installed on first use into a virtualenv
//! under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const VALIDATOR_PACKAGE: &str = "kubernetes-validate==1.37.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = root().join("target/k8s-venv");
        if !venv.join("bin/kubernetes-validate").exists() {
            let created = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .unwrap();
            assert!(
                created.success(),
                "creating the validator virtualenv failed"
            );
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", VALIDATOR_PACKAGE])
                .status()
                .unwrap();
            assert!(installed.success(), "installing {VALIDATOR_PACKAGE} failed");
        }
        venv
    })
    .clone()
}

fn manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root().join("k8s")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn find(kind: &str, name: &str) -> serde_yaml_ng::Value {
    manifests()
        .iter()
        .flat_map(|path| documents(path))
        .find(|doc| {
            doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

#[test]
fn every_manifest_parses() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        for document in documents(&path) {
            assert!(document["apiVersion"].is_string(), "{}", path.display());
            assert!(document["kind"].is_string(), "{}", path.display());
        }
    }
}

#[test]
fn core_kinds_pass_strict_schema() {
    let output = Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .args(manifests())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in [
        "deployment/orders",
        "service/orders",
        "configmap/authzd-bundle",
        "configmap/authzd-config",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated: {text}"
        );
    }
}

#[test]
fn istio_kinds_pass_their_schemas() {
    let output = Command::new(venv().join("bin/python"))
        .arg(root().join("k8s/schemas/validate.py"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("checked 3 Istio resources, 0 problems"),
        "{text}"
    );
}

#[test]
fn bundle_configmap_matches_example_bundle() {
    let configmap = find("ConfigMap", "authzd-bundle");
    let data = configmap["data"].as_mapping().unwrap();
    let pairs = [
        ("bundle.yaml", "bundle.yaml"),
        ("rules-shop.yaml", "rules/shop.yaml"),
        ("tests-shop.yaml", "tests/shop.yaml"),
    ];
    assert_eq!(data.len(), pairs.len());

    let dir = tempfile::tempdir().unwrap();
    for (key, file) in pairs {
        let expected = std::fs::read_to_string(root().join("policies/example").join(file)).unwrap();
        let actual = data[key].as_str().unwrap();
        assert_eq!(
            actual.trim_end(),
            expected.trim_end(),
            "{key} differs from policies/example/{file}"
        );
        std::fs::write(dir.path().join(key), actual).unwrap();
    }

    // The flat ConfigMap layout loads as a bundle and passes its own tests.
    let bundle = authzd::policy::Bundle::load_dir(dir.path()).unwrap();
    let results = authzd::policy::testing::run_tests(&bundle);
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| r.passed()));
}

#[test]
fn config_configmap_is_a_valid_configuration() {
    let configmap = find("ConfigMap", "authzd-config");
    let text = configmap["data"]["config.yaml"].as_str().unwrap();
    let config = authzd::config::Config::parse(text).unwrap();
    assert_eq!(config.listen.map(|a| a.port()), Some(9191));
    assert_eq!(config.admin.listen.map(|a| a.port()), Some(9192));
    assert_eq!(config.bundle.directory, PathBuf::from("/etc/authzd/bundle"));
}

#[test]
fn sidecar_container_is_hardened_and_probed() {
    let deployment = find("Deployment", "orders");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"],
        serde_yaml_ng::Value::Bool(true)
    );
    let authzd = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("authzd"))
        .expect("authzd container");
    let security = &authzd["securityContext"];
    assert_eq!(
        security["readOnlyRootFilesystem"],
        serde_yaml_ng::Value::Bool(true)
    );
    assert_eq!(
        security["allowPrivilegeEscalation"],
        serde_yaml_ng::Value::Bool(false)
    );
    assert!(authzd["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        authzd["readinessProbe"]["grpc"]["port"].as_u64(),
        Some(9191)
    );
    assert_eq!(
        authzd["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
}

#[test]
fn istio_provider_matches_policy() {
    let policy = find("AuthorizationPolicy", "authzd");
    let operator = find("IstioOperator", "authzd-extension-provider");
    let provider = &operator["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(policy["spec"]["action"].as_str(), Some("CUSTOM"));
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["failOpen"],
        serde_yaml_ng::Value::Bool(false)
    );
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"].as_u64(), Some(9191));
}
