//! The `authzd test` and `authzd eval` commands on real bundle directories.

use std::path::{Path, PathBuf};
use std::process::Command;

fn authzd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authzd"))
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example")
}

/// Copies the example bundle and applies one text replacement to a file.
fn broken_copy(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "rules", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for name in ["bundle.yaml", "rules/shop.yaml", "tests/shop.yaml"] {
        let mut text = std::fs::read_to_string(example_dir().join(name)).unwrap();
        if name == file {
            assert!(text.contains(from), "{from} not in {name}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = authzd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn example_bundle_tests_pass() {
    let (ok, output) = run(&["test".as_ref(), example_dir().as_os_str()]);
    assert!(ok, "{output}");
    assert!(output.contains("0 failed"), "{output}");
}

#[test]
fn failing_bundle_test_shows_rule_trace() {
    let dir = broken_copy(
        "tests/shop.yaml",
        "expect: {decision: allow, rule: orders-support-read}",
        "expect: {decision: deny}",
    );
    let (ok, output) = run(&["test".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    assert!(output.contains("FAIL support reads any tenant"), "{output}");
    assert!(output.contains("expected deny, got allow"), "{output}");
    assert!(output.contains("orders-support-read: matched"), "{output}");
    assert!(output.contains("1 failed"), "{output}");
}

#[test]
fn bad_condition_is_named() {
    let dir = broken_copy(
        "rules/shop.yaml",
        "condition: jwt.tenant == path.tenant\n\n  - id: orders-support-read",
        "condition: jwt.tenant == path.tenat\n\n  - id: orders-support-read",
    );
    let (ok, output) = run(&["test".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    assert!(
        output.contains(
            "rules/shop.yaml: rule `orders-read`: unknown variable `path.tenat` in condition; did you mean `path.tenant`?"
        ),
        "{output}"
    );
}

#[test]
fn bad_cel_syntax_is_named() {
    let dir = broken_copy(
        "rules/shop.yaml",
        "condition: path.tenant in [\"suspended-co\"]",
        "condition: path.tenant in [\"suspended-co\"",
    );
    let (ok, output) = run(&["test".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    assert!(
        output.contains("rules/shop.yaml: rule `suspended-tenants`: invalid condition"),
        "{output}"
    );
}

#[test]
fn bad_template_is_named() {
    let dir = broken_copy(
        "rules/shop.yaml",
        "- /tenants/{tenant}/orders/{id}",
        "- /tenants/{tenant}/orders/{id",
    );
    let (ok, output) = run(&["test".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    assert!(
        output.contains(
            "rules/shop.yaml: rule `orders-read`: invalid path `/tenants/{tenant}/orders/{id`"
        ),
        "{output}"
    );
}

#[test]
fn unknown_key_is_named() {
    let dir = broken_copy(
        "rules/shop.yaml",
        "    methods: [GET]\n    paths: [/healthz]",
        "    method: [GET]\n    paths: [/healthz]",
    );
    let (ok, output) = run(&["test".as_ref(), dir.path().as_os_str()]);
    assert!(!ok);
    assert!(output.contains("unknown field `method`"), "{output}");
}

#[test]
fn eval_explains_each_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.yaml");
    std::fs::write(
        &request,
        "method: GET\nhost: shop.example.org\npath: /tenants/acme/orders/42\nprincipal: spiffe://example.org/ns/shop/sa/frontend\nclaims: {sub: alice, tenant: globex, scope: \"orders:read\"}\n",
    )
    .unwrap();

    let (ok, output) = run(&[
        "eval".as_ref(),
        example_dir().as_os_str(),
        "--request".as_ref(),
        request.as_os_str(),
    ]);

    assert!(ok, "{output}");
    assert!(output.contains("decision: deny"), "{output}");
    assert!(output.contains("reason:   no_matching_rule"), "{output}");
    assert!(
        output.contains("- orders-read [allow]: not matched: condition"),
        "{output}"
    );
    assert!(
        output.contains("- orders-support-read [allow]: not matched: roles"),
        "{output}"
    );
    assert!(
        output.contains("- suspended-tenants [deny]: not matched: condition"),
        "{output}"
    );
}
