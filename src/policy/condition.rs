//! CEL conditions: compiled and checked when a bundle loads, evaluated
//! against lazily built inputs when a rule is otherwise a match.
//!
//! A condition sees four variables:
//! - `request`: `method`, `host`, `path`, `query` (map of first values),
//!   `headers` (map of lower-case names), `scheme`, `id`, `time` (timestamp)
//!   and `context_extensions` (map);
//! - `workload`: `id`, `trust_domain` and `path`, all empty for no workload;
//! - `path`: the rule's path template variables;
//! - `jwt`: `present`, `subject`, `issuer`, `audiences`, `scopes`, `roles`,
//!   `tenant` and `claims`, empty for an anonymous request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};

use crate::identity::Identities;
use crate::request::RequestFacts;

/// Builds the CEL environment conditions compile and run in: the standard
/// library plus the strings extension (`split`, `lowerAscii`, …).
pub fn environment() -> Arc<Env> {
    let mut env = Env::stdlib();
    // The strings extension only declares functions, which cannot clash with
    // the standard library's, so it is added without checking.
    let _ = env.add_extension(cel::extensions::strings);
    Arc::new(env)
}

const VARIABLES: [&str; 4] = ["request", "workload", "path", "jwt"];

/// A compiled, checked CEL condition.
pub struct Condition {
    pub source: Box<str>,
    program: Program,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .finish()
    }
}

impl Condition {
    /// Compiles `source` and checks that it uses only known variables and,
    /// for `path`, only the variables of the rule's path templates.
    pub fn compile(env: &Env, source: &str, path_variables: &[&str]) -> Result<Self, String> {
        let program = env
            .compile(source)
            .map_err(|e| format!("invalid condition: {}", e.to_string().trim()))?;
        check_references(
            &program.expression().clone(),
            path_variables,
            &mut Vec::new(),
        )?;
        Ok(Condition {
            source: source.into(),
            program,
        })
    }

    /// Evaluates the condition. A result other than `true` or `false` is an
    /// error, and so is a missing map key.
    pub fn evaluate(&self, env: &Arc<Env>, input: &CelInput<'_>) -> Result<bool, String> {
        let mut context = Context::with_env(Arc::clone(env));
        context.set_variable_resolver(input);
        match self.program.execute(&context) {
            Ok(Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!(
                "condition returned {:?}, expected a bool",
                other.type_of()
            )),
            Err(error) => Err(format!("condition failed: {error}")),
        }
    }
}

/// Walks the expression and rejects unknown variables and unknown `path.x`
/// members. Comprehension variables are in scope inside their comprehension.
fn check_references(
    expr: &IdedExpr,
    path_variables: &[&str],
    bound: &mut Vec<String>,
) -> Result<(), String> {
    match &expr.expr {
        Expr::Ident(name) => {
            if VARIABLES.contains(&name.as_str()) || bound.iter().any(|b| b == name) {
                Ok(())
            } else {
                Err(unknown_variable(name, &VARIABLES))
            }
        }
        Expr::Select(select) => {
            if let Expr::Ident(operand) = &select.operand.expr
                && operand == "path"
                && !bound.iter().any(|b| b == "path")
                && !path_variables.contains(&select.field.as_str())
            {
                let qualified = format!("path.{}", select.field);
                let known: Vec<String> =
                    path_variables.iter().map(|v| format!("path.{v}")).collect();
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                return Err(unknown_variable(&qualified, &known));
            }
            check_references(&select.operand, path_variables, bound)
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_references(target, path_variables, bound)?;
            }
            call.args
                .iter()
                .try_for_each(|arg| check_references(arg, path_variables, bound))
        }
        Expr::Comprehension(comprehension) => {
            check_references(&comprehension.iter_range, path_variables, bound)?;
            check_references(&comprehension.accu_init, path_variables, bound)?;
            let depth = bound.len();
            bound.push(comprehension.iter_var.clone());
            if let Some(second) = &comprehension.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(comprehension.accu_var.clone());
            let result = [
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ]
            .into_iter()
            .try_for_each(|part| check_references(part, path_variables, bound));
            bound.truncate(depth);
            result
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|element| check_references(element, path_variables, bound)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(pair) => {
                check_references(&pair.key, path_variables, bound)?;
                check_references(&pair.value, path_variables, bound)
            }
            EntryExpr::StructField(field) => check_references(&field.value, path_variables, bound),
        }),
        Expr::Struct(_) => Err("invalid condition: message literals are not supported".to_owned()),
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

fn unknown_variable(name: &str, known: &[&str]) -> String {
    let suggestion = known
        .iter()
        .min_by_key(|candidate| edit_distance(name, candidate))
        .filter(|candidate| edit_distance(name, candidate) <= 2);
    match suggestion {
        Some(candidate) => {
            format!("unknown variable `{name}` in condition; did you mean `{candidate}`?")
        }
        None if known.is_empty() => format!("unknown variable `{name}` in condition"),
        None => format!(
            "unknown variable `{name}` in condition; known variables are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The variables a condition reads, built on first use and shared by every
/// rule evaluated in one decision. Only `path` differs between rules.
pub struct CelInput<'a> {
    shared: &'a SharedInput<'a>,
    path: Option<Box<dyn Val>>,
}

impl<'a> CelInput<'a> {
    pub fn new(shared: &'a SharedInput<'a>, path: Value) -> Self {
        CelInput {
            shared,
            path: to_val(path),
        }
    }
}

/// A CEL variable in the form the interpreter reads. Converting a `Value`
/// map copies it whole, so each variable is converted once and then lent.
pub type CelVal = Arc<dyn Val>;

/// Converts a value for lending to conditions; `None` for the kinds of
/// value a variable never holds, such as functions.
pub fn to_val(value: Value) -> Option<Box<dyn Val>> {
    value.try_into().ok()
}

/// The per-decision part of [`CelInput`].
pub struct SharedInput<'a> {
    facts: &'a RequestFacts<'a>,
    identities: &'a Identities,
    time: chrono::DateTime<chrono::FixedOffset>,
    request: OnceLock<Option<Box<dyn Val>>>,
    workload: OnceLock<Option<Box<dyn Val>>>,
    jwt: OnceLock<Option<CelVal>>,
}

impl<'a> SharedInput<'a> {
    pub fn new(
        facts: &'a RequestFacts<'a>,
        identities: &'a Identities,
        time: chrono::DateTime<chrono::FixedOffset>,
    ) -> Self {
        SharedInput {
            facts,
            identities,
            time,
            request: OnceLock::new(),
            workload: OnceLock::new(),
            jwt: OnceLock::new(),
        }
    }

    fn request(&self) -> Option<&dyn Val> {
        self.request
            .get_or_init(|| {
                let facts = self.facts;
                let headers: HashMap<String, Value> = facts
                    .headers
                    .iter()
                    .filter(|(name, _)| !name.starts_with(':'))
                    .map(|(name, _)| {
                        let value = facts.headers.get(name).unwrap_or_default();
                        (name.to_owned(), string(&value))
                    })
                    .collect();
                let mut query: HashMap<String, Value> = HashMap::new();
                for (name, value) in crate::request::path::parse_query(facts.query) {
                    query
                        .entry(name)
                        .or_insert_with(|| Value::String(Arc::new(value)));
                }
                let extensions: HashMap<String, Value> = facts
                    .context_extensions
                    .map(|map| map.iter().map(|(k, v)| (k.clone(), string(v))).collect())
                    .unwrap_or_default();

                let fields: HashMap<&str, Value> = HashMap::from([
                    ("method", string(facts.method)),
                    ("host", string(&facts.host)),
                    ("path", string(facts.path.as_str())),
                    ("scheme", string(facts.scheme)),
                    ("id", string(facts.id)),
                    ("headers", Value::Map(headers.into())),
                    ("query", Value::Map(query.into())),
                    ("context_extensions", Value::Map(extensions.into())),
                    ("time", Value::Timestamp(self.time)),
                ]);
                to_val(Value::Map(fields.into()))
            })
            .as_deref()
    }

    fn workload(&self) -> Option<&dyn Val> {
        self.workload
            .get_or_init(|| {
                let workload = self.identities.workload.as_ref();
                let fields: HashMap<&str, Value> = HashMap::from([
                    ("id", string(workload.map_or("", |w| w.as_str()))),
                    (
                        "trust_domain",
                        string(workload.map_or("", |w| w.trust_domain())),
                    ),
                    ("path", string(workload.map_or("", |w| w.path()))),
                ]);
                to_val(Value::Map(fields.into()))
            })
            .as_deref()
    }

    fn jwt(&self) -> Option<&dyn Val> {
        self.jwt
            .get_or_init(|| match self.identities.user.as_deref() {
                Some(user) => user.cel_jwt.clone(),
                None => to_val(jwt_value(None)).map(Arc::from),
            })
            .as_deref()
    }
}

/// Builds the `jwt` variable for a user, or the empty one for an anonymous
/// request. A verified user stores its own, built once when its token is
/// first verified and reused from the token cache.
pub fn jwt_value(user: Option<&crate::identity::User>) -> Value {
    let list = |items: Option<&Vec<String>>| {
        Value::List(Arc::new(
            items
                .map(|items| items.iter().map(|s| string(s)).collect())
                .unwrap_or_default(),
        ))
    };
    let fields: HashMap<&str, Value> = HashMap::from([
        ("present", Value::Bool(user.is_some())),
        ("subject", string(user.map_or("", |u| u.subject.as_str()))),
        ("issuer", string(user.map_or("", |u| u.issuer.as_str()))),
        ("audiences", list(user.map(|u| &u.audiences))),
        ("scopes", list(user.map(|u| &u.scopes))),
        ("roles", list(user.map(|u| &u.roles))),
        (
            "tenant",
            string(user.and_then(|u| u.tenant.as_deref()).unwrap_or("")),
        ),
        (
            "claims",
            user.map_or_else(
                || Value::Map(HashMap::<String, Value>::new().into()),
                |u| u.cel_claims.clone(),
            ),
        ),
    ]);
    Value::Map(fields.into())
}

fn string(text: &str) -> Value {
    Value::String(Arc::new(text.to_owned()))
}

impl VariableResolver for CelInput<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value = match variable {
            "request" => self.shared.request(),
            "workload" => self.shared.workload(),
            "jwt" => self.shared.jwt(),
            "path" => self.path.as_deref(),
            _ => return None,
        };
        value.map(CowVal::Borrowed)
    }
}

/// Builds the `path` variable for one rule from its template's positions.
pub fn path_variables(
    variables: &[(usize, Box<str>)],
    path: &crate::request::NormalizedPath,
) -> Value {
    let fields: HashMap<String, Value> = variables
        .iter()
        .map(|(index, name)| (name.to_string(), string(path.segment(*index).unwrap_or(""))))
        .collect();
    Value::Map(fields.into())
}

/// Lists the variable names a set of templates share, for checking `path.x`.
pub fn common_variables<'a>(templates: impl Iterator<Item = Vec<&'a str>>) -> Vec<&'a str> {
    let mut common: Option<HashSet<&str>> = None;
    for names in templates {
        let names: HashSet<&str> = names.into_iter().collect();
        common = Some(match common {
            None => names,
            Some(previous) => previous.intersection(&names).copied().collect(),
        });
    }
    let mut common: Vec<&str> = common.unwrap_or_default().into_iter().collect();
    common.sort_unstable();
    common
}
