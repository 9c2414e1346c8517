//! Loading and compiling a bundle. Every file is parsed and every pattern,
//! template and condition is compiled before a bundle can be used, and a
//! bundle with any error is rejected whole with one message per problem.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::condition::{self, Condition};
use super::index::RuleIndex;
use super::model::{ClaimMapping, Effect, Manifest, Mode, RoleSpec, RuleSpec, TestSpec};
use super::pattern::{HostPattern, PathPattern, PrincipalPattern};
use crate::identity::workload::WorkloadPolicy;
use crate::request::PathOptions;

/// The manifest's file name at the bundle root.
pub const MANIFEST_FILE: &str = "bundle.yaml";

/// Limits on what a bundle may hold, so a runaway bundle cannot exhaust memory.
pub const MAX_BUNDLE_FILES: usize = 10_000;
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// A bundle that failed to load, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bundle: {}", errors.join("; "))]
pub struct BundleError {
    pub errors: Vec<String>,
}

impl BundleError {
    fn one(message: String) -> Self {
        BundleError {
            errors: vec![message],
        }
    }
}

/// The files of a bundle, by path relative to the bundle root with `/`
/// separators. Directories, archives and pushes all become this first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleFiles {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    /// Reads every file under `root`, following symbolic links (a Kubernetes
    /// ConfigMap mounts each key as a link into `..data/`) and skipping
    /// entries whose names start with `.`.
    pub fn read_dir(root: &Path) -> Result<Self, BundleError> {
        let mut bundle = BundleFiles::default();
        let mut total: u64 = 0;
        let mut pending = vec![(root.to_path_buf(), String::new())];

        while let Some((dir, prefix)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                BundleError::one(format!("cannot read directory `{}`: {e}", dir.display()))
            })?;
            for entry in entries {
                let entry = entry.map_err(|e| {
                    BundleError::one(format!("cannot read directory `{}`: {e}", dir.display()))
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let relative = format!("{prefix}{name}");
                let metadata = std::fs::metadata(&path).map_err(|e| {
                    BundleError::one(format!("cannot read `{}`: {e}", path.display()))
                })?;

                if metadata.is_dir() {
                    pending.push((path, format!("{relative}/")));
                    continue;
                }
                if !is_yaml(&name) && !is_json(&name) {
                    continue;
                }
                total += metadata.len();
                if total > MAX_BUNDLE_BYTES || bundle.files.len() >= MAX_BUNDLE_FILES {
                    return Err(BundleError::one(format!(
                        "bundle `{}` exceeds {MAX_BUNDLE_FILES} files or {MAX_BUNDLE_BYTES} bytes",
                        root.display()
                    )));
                }
                let content = std::fs::read(&path).map_err(|e| {
                    BundleError::one(format!("cannot read `{}`: {e}", path.display()))
                })?;
                bundle.files.insert(relative, content);
            }
        }
        Ok(bundle)
    }

    /// A SHA-256 digest over every file name and content, in name order.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, content) in &self.files {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((content.len() as u64).to_be_bytes());
            hasher.update(content);
        }
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// JSON files are data that the manifest names, such as a JWKS.
fn is_json(name: &str) -> bool {
    name.ends_with(".json")
}

/// A rule file or a test file; a file may hold both lists.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    tests: Vec<TestSpec>,
}

/// A path pattern of a rule with its variables' segment positions.
#[derive(Debug)]
pub struct RulePath {
    pub pattern: PathPattern,
    pub variables: Vec<(usize, Box<str>)>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub file: Arc<str>,
    pub effect: Effect,
    pub mode: Mode,
    pub hosts: Vec<HostPattern>,
    pub not_hosts: Vec<HostPattern>,
    pub methods: Vec<Box<str>>,
    pub not_methods: Vec<Box<str>>,
    pub paths: Vec<RulePath>,
    pub not_paths: Vec<PathPattern>,
    pub principals: Vec<PrincipalPattern>,
    pub not_principals: Vec<PrincipalPattern>,
    pub authenticated: bool,
    pub issuers: Vec<Box<str>>,
    pub subjects: Vec<Box<str>>,
    pub scopes: Vec<Box<str>>,
    /// Indexes into [`Bundle::roles`].
    pub roles: Vec<usize>,
    pub headers: Vec<(Box<str>, Vec<Box<str>>)>,
    pub condition: Option<Condition>,
}

/// A compiled role.
#[derive(Debug)]
pub struct Role {
    pub name: Box<str>,
    pub claim_values: Vec<Box<str>>,
    pub subjects: Vec<Box<str>>,
    pub principals: Vec<PrincipalPattern>,
}

/// A bundle test with the file it came from.
#[derive(Debug, Clone)]
pub struct BundleTest {
    pub file: Arc<str>,
    pub spec: TestSpec,
}

/// A compiled, immutable bundle.
pub struct Bundle {
    pub name: Arc<str>,
    pub revision: Arc<str>,
    pub digest: Arc<str>,
    pub mode: Mode,
    pub path_options: PathOptions,
    pub claims: ClaimMapping,
    pub rules: Vec<Rule>,
    pub roles: Vec<Role>,
    pub tests: Vec<BundleTest>,
    pub workloads: WorkloadPolicy,
    /// End-user token providers; verified by the server's `JwtVerifier`.
    pub jwt: Arc<crate::jwt::Providers>,
    pub(crate) index: RuleIndex,
    pub(crate) cel: Arc<cel::Env>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("revision", &self.revision)
            .field("digest", &self.digest)
            .field("rules", &self.rules.len())
            .field("tests", &self.tests.len())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Reads and compiles the bundle directory at `root`.
    pub fn load_dir(root: &Path) -> Result<Bundle, BundleError> {
        Bundle::compile(&BundleFiles::read_dir(root)?)
    }

    /// Compiles a bundle from its files.
    pub fn compile(files: &BundleFiles) -> Result<Bundle, BundleError> {
        let mut errors = Vec::new();

        let manifest = match files.files.get(MANIFEST_FILE) {
            None => {
                return Err(BundleError::one(format!(
                    "missing `{MANIFEST_FILE}` at the bundle root"
                )));
            }
            Some(bytes) => match serde_yaml_ng::from_slice::<Manifest>(bytes) {
                Ok(manifest) => manifest,
                Err(e) => return Err(BundleError::one(format!("{MANIFEST_FILE}: {e}"))),
            },
        };
        check_manifest(&manifest, &mut errors);
        let workloads = WorkloadPolicy::compile(&manifest.workloads, &mut errors);
        let jwt = crate::jwt::Providers::compile(
            &manifest.jwt,
            &manifest.claims,
            &files.files,
            MANIFEST_FILE,
            &mut errors,
        );

        let mut rule_specs: Vec<(Arc<str>, RuleSpec)> = Vec::new();
        let mut tests = Vec::new();
        for (name, bytes) in &files.files {
            if name == MANIFEST_FILE || !is_yaml(name) {
                continue;
            }
            match serde_yaml_ng::from_slice::<Option<PolicyFile>>(bytes) {
                Ok(Some(file)) => {
                    let file_name: Arc<str> = name.as_str().into();
                    rule_specs.extend(file.rules.into_iter().map(|r| (file_name.clone(), r)));
                    tests.extend(file.tests.into_iter().map(|spec| BundleTest {
                        file: file_name.clone(),
                        spec,
                    }));
                }
                Ok(None) => {}
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }

        let cel = condition::environment();
        let roles = compile_roles(&manifest.roles, &mut errors);
        let role_index: HashMap<&str, usize> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| (&*role.name, i))
            .collect();

        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (file, spec) in &rule_specs {
            if let Some(first) = seen.insert(&spec.id, file) {
                errors.push(format!(
                    "{file}: rule `{}`: duplicate rule id, first defined in {first}",
                    spec.id
                ));
            }
        }

        let mut rules = Vec::with_capacity(rule_specs.len());
        for (file, spec) in &rule_specs {
            match compile_rule(file, spec, &role_index, &cel) {
                Ok(rule) => rules.push(rule),
                Err(problems) => errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{file}: rule `{}`: {p}", spec.id)),
                ),
            }
        }

        let mut test_names: HashMap<&str, &str> = HashMap::new();
        for test in &tests {
            if let Some(first) = test_names.insert(&test.spec.name, &test.file) {
                errors.push(format!(
                    "{}: test `{}`: duplicate test name, first defined in {first}",
                    test.file, test.spec.name
                ));
            }
        }

        if !errors.is_empty() {
            return Err(BundleError { errors });
        }

        let mut index = RuleIndex::default();
        for (position, rule) in rules.iter().enumerate() {
            let patterns: Vec<PathPattern> = rule.paths.iter().map(|p| p.pattern.clone()).collect();
            index.insert(position as u32, &rule.hosts, &patterns);
        }

        Ok(Bundle {
            name: manifest.name.into(),
            revision: manifest.revision.into(),
            digest: files.digest().into(),
            mode: manifest.mode,
            path_options: manifest.paths,
            claims: manifest.claims,
            rules,
            roles,
            tests,
            workloads,
            jwt: Arc::new(jwt),
            index,
            cel,
        })
    }
}

fn check_manifest(manifest: &Manifest, errors: &mut Vec<String>) {
    if manifest.format != 1 {
        errors.push(format!(
            "{MANIFEST_FILE}: unsupported format `{}`; this authzd reads format 1",
            manifest.format
        ));
    }
    if manifest.name.trim().is_empty() {
        errors.push(format!("{MANIFEST_FILE}: `name` is empty"));
    }
    if manifest.revision.trim().is_empty() {
        errors.push(format!("{MANIFEST_FILE}: `revision` is empty"));
    }
    if manifest.revision.len() > 128 || manifest.revision.chars().any(char::is_control) {
        errors.push(format!(
            "{MANIFEST_FILE}: `revision` must be at most 128 printable characters"
        ));
    }
}

fn compile_roles(specs: &[RoleSpec], errors: &mut Vec<String>) -> Vec<Role> {
    let mut roles: Vec<Role> = Vec::with_capacity(specs.len());
    for spec in specs {
        if roles.iter().any(|r| *r.name == *spec.name) {
            errors.push(format!(
                "{MANIFEST_FILE}: role `{}`: duplicate role",
                spec.name
            ));
            continue;
        }
        let mut principals = Vec::new();
        for text in &spec.principals {
            match PrincipalPattern::parse(text) {
                Ok(pattern) => principals.push(pattern),
                Err(e) => errors.push(format!("{MANIFEST_FILE}: role `{}`: {e}", spec.name)),
            }
        }
        roles.push(Role {
            name: spec.name.as_str().into(),
            claim_values: boxed(&spec.claim_values),
            subjects: boxed(&spec.subjects),
            principals,
        });
    }
    roles
}

fn boxed(values: &[String]) -> Vec<Box<str>> {
    values.iter().map(|v| v.as_str().into()).collect()
}

/// Compiles one rule, collecting every problem instead of stopping at the first.
fn compile_rule(
    file: &Arc<str>,
    spec: &RuleSpec,
    role_index: &HashMap<&str, usize>,
    cel: &cel::Env,
) -> Result<Rule, Vec<String>> {
    let mut problems = Vec::new();

    if spec.id.is_empty()
        || !spec
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        problems.push("invalid rule id: use letters, digits, `-`, `_`, `.` and `:`".to_owned());
    }

    let hosts = parse_all(&spec.hosts, HostPattern::parse, &mut problems);
    let not_hosts = parse_all(&spec.not_hosts, HostPattern::parse, &mut problems);
    let methods = check_methods(&spec.methods, &mut problems);
    let not_methods = check_methods(&spec.not_methods, &mut problems);
    let path_patterns = parse_all(&spec.paths, PathPattern::parse, &mut problems);
    let not_paths = parse_all(&spec.not_paths, PathPattern::parse, &mut problems);
    let principals = parse_all(&spec.principals, PrincipalPattern::parse, &mut problems);
    let not_principals = parse_all(&spec.not_principals, PrincipalPattern::parse, &mut problems);

    let mut roles = Vec::with_capacity(spec.roles.len());
    for name in &spec.roles {
        match role_index.get(name.as_str()) {
            Some(&index) => roles.push(index),
            None => problems.push(format!(
                "unknown role `{name}`; define it under `roles` in {MANIFEST_FILE}"
            )),
        }
    }

    if spec.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
        problems.push("a scope is empty or contains a space".to_owned());
    }

    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, values) in &spec.headers {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b == b' ') {
            problems.push(format!(
                "header name `{name}` must be lower case without spaces"
            ));
        }
        if values.is_empty() {
            problems.push(format!(
                "header `{name}` lists no values; use `[\"*\"]` for any value"
            ));
        }
        headers.push((name.as_str().into(), boxed(values)));
    }

    let paths: Vec<RulePath> = path_patterns
        .into_iter()
        .map(|pattern| {
            let variables = pattern
                .variables()
                .map(|(index, name)| (index, name.into()))
                .collect();
            RulePath { pattern, variables }
        })
        .collect();

    let condition = spec.condition.as_deref().and_then(|source| {
        let names = condition::common_variables(
            paths
                .iter()
                .map(|p| p.variables.iter().map(|(_, n)| &**n).collect()),
        );
        match Condition::compile(cel, source, &names) {
            Ok(condition) => Some(condition),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    });

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Rule {
        id: spec.id.as_str().into(),
        file: file.clone(),
        effect: spec.effect,
        mode: spec.mode,
        hosts,
        not_hosts,
        methods,
        not_methods,
        paths,
        not_paths,
        principals,
        not_principals,
        authenticated: spec.authenticated,
        issuers: boxed(&spec.issuers),
        subjects: boxed(&spec.subjects),
        scopes: boxed(&spec.scopes),
        roles,
        headers,
        condition,
    })
}

fn parse_all<T>(
    texts: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
    problems: &mut Vec<String>,
) -> Vec<T> {
    let mut parsed = Vec::with_capacity(texts.len());
    for text in texts {
        match parse(text) {
            Ok(value) => parsed.push(value),
            Err(e) => problems.push(e),
        }
    }
    parsed
}

fn check_methods(methods: &[String], problems: &mut Vec<String>) -> Vec<Box<str>> {
    for method in methods {
        let valid = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            problems.push(format!(
                "invalid method `{method}`: methods are upper case, such as `GET`"
            ));
        }
    }
    boxed(methods)
}
