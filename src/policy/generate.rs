//! Generated bundles of any size, for benchmarks and load tests.
//!
//! Rules are spread over one host per 100 rules, five methods and four path
//! shapes (exact, `/**` prefix, and two templates with variables). Every
//! fifth rule has a CEL condition, every twentieth is a deny rule, and every
//! third requires a workload principal. Each rule owns a distinct path
//! segment, so the generated tests know which rule decides their request.

use std::fmt::Write as _;

use super::compile::{BundleFiles, MANIFEST_FILE};

/// Rules per generated rule file.
const RULES_PER_FILE: usize = 500;
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Generates a valid bundle with `rules` rules and about ten tests that pass.
pub fn generate_bundle(rules: usize, revision: &str) -> BundleFiles {
    let hosts = rules.div_ceil(100).max(1);
    let mut files = BundleFiles::default();
    files.files.insert(
        MANIFEST_FILE.to_owned(),
        format!("format: 1\nname: generated-{rules}\nrevision: \"{revision}\"\n").into_bytes(),
    );

    let mut text = String::new();
    for rule in 0..rules {
        if rule > 0 && rule % RULES_PER_FILE == 0 {
            flush_rules(&mut files, rule / RULES_PER_FILE - 1, &mut text);
        }
        write_rule(&mut text, rule, hosts);
    }
    if !text.is_empty() {
        flush_rules(
            &mut files,
            rules.saturating_sub(1) / RULES_PER_FILE,
            &mut text,
        );
    }

    files.files.insert(
        "tests/generated.yaml".to_owned(),
        tests(rules, hosts).into_bytes(),
    );
    files
}

fn flush_rules(files: &mut BundleFiles, part: usize, text: &mut String) {
    let content = format!("rules:\n{text}");
    files
        .files
        .insert(format!("rules/part-{part:03}.yaml"), content.into_bytes());
    text.clear();
}

/// The request facts that rule `rule` matches.
struct Shape {
    host: String,
    method: &'static str,
    pattern: String,
    path: String,
    principal: Option<String>,
    condition: Option<&'static str>,
    deny: bool,
}

fn shape(rule: usize, hosts: usize) -> Shape {
    let host = format!("svc-{:03}.internal.example", rule % hosts);
    let method = METHODS[rule % METHODS.len()];
    let (pattern, path) = match rule % 4 {
        0 => (
            format!("/api/v1/items{rule}"),
            format!("/api/v1/items{rule}"),
        ),
        1 => (
            format!("/api/v1/items{rule}/**"),
            format!("/api/v1/items{rule}/a/b"),
        ),
        2 => (
            format!("/tenants/{{tenant}}/items{rule}/{{id}}"),
            format!("/tenants/acme/items{rule}/42"),
        ),
        _ => (
            format!("/tenants/{{tenant}}/items{rule}"),
            format!("/tenants/acme/items{rule}"),
        ),
    };
    let condition = match (rule % 5, rule % 4) {
        (4, 2 | 3) => Some("jwt.tenant == path.tenant"),
        (4, _) => Some("request.host.endsWith(\".internal.example\")"),
        _ => None,
    };
    let principal = rule
        .is_multiple_of(3)
        .then(|| format!("spiffe://example.org/ns/ns{}/sa/client", rule % 10));
    Shape {
        host,
        method,
        pattern,
        path,
        principal,
        condition,
        deny: rule % 20 == 19,
    }
}

fn write_rule(text: &mut String, rule: usize, hosts: usize) {
    let shape = shape(rule, hosts);
    let _ = writeln!(text, "  - id: rule-{rule}");
    let _ = writeln!(
        text,
        "    effect: {}",
        if shape.deny { "deny" } else { "allow" }
    );
    let _ = writeln!(text, "    hosts: [{}]", shape.host);
    let _ = writeln!(text, "    methods: [{}]", shape.method);
    let _ = writeln!(text, "    paths: [\"{}\"]", shape.pattern);
    if let Some(principal) = &shape.principal {
        let _ = writeln!(text, "    principals: [\"{principal}\"]");
    }
    if let Some(condition) = shape.condition {
        let _ = writeln!(text, "    condition: '{condition}'");
    }
}

/// About ten tests spread over the rules, plus one request no rule matches.
fn tests(rules: usize, hosts: usize) -> String {
    let mut text = String::from("tests:\n");
    let step = (rules / 10).max(1);
    for rule in (0..rules).step_by(step) {
        let shape = shape(rule, hosts);
        let _ = writeln!(text, "  - name: rule {rule} decides its request");
        let _ = writeln!(text, "    request:");
        let _ = writeln!(text, "      method: {}", shape.method);
        let _ = writeln!(text, "      host: {}", shape.host);
        let _ = writeln!(text, "      path: {}", shape.path);
        if let Some(principal) = &shape.principal {
            let _ = writeln!(text, "      principal: {principal}");
        }
        let _ = writeln!(text, "      claims: {{sub: user-{rule}, tenant: acme}}");
        let _ = writeln!(
            text,
            "    expect: {{decision: {}, rule: rule-{rule}}}",
            if shape.deny { "deny" } else { "allow" }
        );
    }
    text.push_str(
        "  - name: unknown path is denied\n    request: {method: GET, host: nowhere.example, path: /nothing}\n    expect: {decision: deny, reason: no_matching_rule}\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Bundle, testing};

    #[test]
    fn generated_bundle_passes_tests() {
        for rules in [1, 10, 1_000] {
            let files = generate_bundle(rules, "r1");
            let bundle = Bundle::compile(&files).unwrap();
            assert_eq!(bundle.rules.len(), rules);
            let failed: Vec<_> = testing::run_tests(&bundle)
                .into_iter()
                .filter(|r| !r.passed())
                .map(|r| format!("{}: {:?}", r.name, r.failures))
                .collect();
            assert!(failed.is_empty(), "{rules} rules: {failed:?}");
        }
    }
}
