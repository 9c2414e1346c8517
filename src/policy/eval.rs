//! Evaluation: one decision from a compiled bundle, request facts and
//! identities. Default deny; a matching deny rule overrides any allow.

use std::borrow::Cow;
use std::sync::Arc;

use super::compile::{Bundle, Role, Rule};
use super::condition::{self, CelInput, SharedInput};
use super::index::{Candidate, NO_PATTERN};
use super::model::{Effect, Mode};
use crate::decision::{Decision, Reason};
use crate::identity::{Identities, User};
use crate::request::RequestFacts;

/// The match result of one candidate rule, for `authzd eval` and test failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    pub rule: Arc<str>,
    pub effect: Effect,
    pub mode: Mode,
    pub outcome: Outcome,
}

/// The result of matching one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    /// The first constraint that did not match, such as `method`.
    NotMatched(Cow<'static, str>),
    /// The condition failed to evaluate, for the reason in the message.
    ConditionError(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Matched => f.write_str("matched"),
            Outcome::NotMatched(why) => write!(f, "not matched: {why}"),
            Outcome::ConditionError(error) => write!(f, "condition error: {error}"),
        }
    }
}

impl Bundle {
    /// Decides one request. Never fails: every path ends in a decision.
    pub fn decide(&self, facts: &RequestFacts<'_>, identities: &Identities) -> Decision {
        self.decide_at(facts, identities, chrono::Utc::now().into(), None)
    }

    /// Decides one request at a given time, recording why each candidate
    /// rule matched or not when `trace` is given.
    pub fn decide_at(
        &self,
        facts: &RequestFacts<'_>,
        identities: &Identities,
        time: chrono::DateTime<chrono::FixedOffset>,
        mut trace: Option<&mut Vec<TraceEntry>>,
    ) -> Decision {
        let mut candidates = Vec::with_capacity(8);
        self.index
            .candidates(&facts.host, &facts.path, &mut candidates);

        let shared = SharedInput::new(facts, identities, time);
        let mut allowed_by: Option<&Rule> = None;
        let mut denied_by: Option<(&Rule, Reason)> = None;
        let mut audit_matches = Vec::new();
        let mut previous_rule = u32::MAX;

        for Candidate {
            rule: position,
            pattern,
        } in candidates
        {
            // Several patterns of one rule can match; the first decides.
            if position == previous_rule {
                continue;
            }
            let Some(rule) = self.rules.get(position as usize) else {
                continue;
            };
            let outcome = self.match_rule(rule, pattern, facts, identities, &shared);
            if matches!(outcome, Outcome::Matched | Outcome::ConditionError(_)) {
                previous_rule = position;
            }

            let applies = match (&outcome, rule.effect) {
                (Outcome::Matched, _) => true,
                // A deny rule whose condition cannot be evaluated is applied,
                // so an error never opens access.
                (Outcome::ConditionError(_), Effect::Deny) => true,
                _ => false,
            };
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(TraceEntry {
                    rule: rule.id.clone(),
                    effect: rule.effect,
                    mode: rule.mode,
                    outcome: outcome.clone(),
                });
            }
            if !applies {
                continue;
            }

            if rule.mode == Mode::Audit {
                audit_matches.push(rule.id.clone());
                continue;
            }
            match rule.effect {
                Effect::Deny if denied_by.is_none() => {
                    let reason = match outcome {
                        Outcome::ConditionError(_) => Reason::ConditionError,
                        _ => Reason::DeniedByRule,
                    };
                    denied_by = Some((rule, reason));
                    if trace.is_none() {
                        break;
                    }
                }
                Effect::Allow if allowed_by.is_none() => allowed_by = Some(rule),
                _ => {}
            }
        }

        let (allowed, reason, rule) = match (denied_by, allowed_by) {
            (Some((rule, reason)), _) => (false, reason, Some(rule.id.clone())),
            (None, Some(rule)) => (true, Reason::AllowedByRule, Some(rule.id.clone())),
            (None, None) => (false, Reason::NoMatchingRule, None),
        };
        let decision = Decision {
            allowed,
            reason,
            rule,
            revision: self.revision.clone(),
            audit_matches,
            detail: None,
        };
        self.apply_bundle_mode(decision)
    }

    /// In bundle audit mode every request is allowed; the decision that
    /// would have been enforced is kept in `detail` for the logs.
    fn apply_bundle_mode(&self, mut decision: Decision) -> Decision {
        if self.mode == Mode::Audit && !decision.allowed {
            decision.detail = Some(format!(
                "audit mode: would deny ({})",
                decision.reason.as_str()
            ));
            decision.allowed = true;
            decision.reason = Reason::AuditMode;
        }
        decision
    }

    fn match_rule(
        &self,
        rule: &Rule,
        pattern: u32,
        facts: &RequestFacts<'_>,
        identities: &Identities,
        shared: &SharedInput<'_>,
    ) -> Outcome {
        let not = |what: &'static str| Outcome::NotMatched(Cow::Borrowed(what));

        if !rule.methods.is_empty() && !rule.methods.iter().any(|m| **m == *facts.method) {
            return not("method");
        }
        if rule.not_methods.iter().any(|m| **m == *facts.method) {
            return not("not_methods");
        }
        if rule.not_hosts.iter().any(|h| h.matches(&facts.host)) {
            return not("not_hosts");
        }
        if rule.not_paths.iter().any(|p| p.matches(&facts.path)) {
            return not("not_paths");
        }

        let workload = identities.workload.as_ref();
        if !rule.principals.is_empty() {
            match workload {
                None => return not("principals: no workload identity"),
                Some(id) if !rule.principals.iter().any(|p| p.matches(id)) => {
                    return not("principals");
                }
                Some(_) => {}
            }
        }
        if let Some(id) = workload
            && rule.not_principals.iter().any(|p| p.matches(id))
        {
            return not("not_principals");
        }

        let user = identities.user.as_deref();
        let needs_user = rule.authenticated
            || !rule.issuers.is_empty()
            || !rule.subjects.is_empty()
            || !rule.scopes.is_empty();
        if needs_user && user.is_none() {
            return not("no verified user token");
        }
        if let Some(user) = user {
            if !rule.issuers.is_empty() && !rule.issuers.iter().any(|i| **i == *user.issuer) {
                return not("issuers");
            }
            if !rule.subjects.is_empty() && !rule.subjects.iter().any(|s| **s == *user.subject) {
                return not("subjects");
            }
            if let Some(missing) = rule
                .scopes
                .iter()
                .find(|scope| !user.scopes.iter().any(|s| *s == ***scope))
            {
                return Outcome::NotMatched(Cow::Owned(format!("scopes: missing `{missing}`")));
            }
        }
        if !rule.roles.is_empty() {
            let held = rule.roles.iter().any(|&index| {
                self.roles
                    .get(index)
                    .is_some_and(|role| holds_role(role, user, workload))
            });
            if !held {
                return not("roles");
            }
        }

        for (name, accepted) in &rule.headers {
            let Some(value) = facts.headers.get(name) else {
                return Outcome::NotMatched(Cow::Owned(format!("headers: `{name}` absent")));
            };
            let any = accepted.iter().any(|a| &**a == "*");
            let found = any
                || value
                    .split(',')
                    .map(str::trim)
                    .any(|v| accepted.iter().any(|a| **a == *v));
            if !found {
                return Outcome::NotMatched(Cow::Owned(format!("headers: `{name}`")));
            }
        }

        let Some(condition) = &rule.condition else {
            return Outcome::Matched;
        };
        let path_value = match rule.paths.get(pattern as usize) {
            Some(path) if pattern != NO_PATTERN => {
                condition::path_variables(&path.variables, &facts.path)
            }
            _ => condition::path_variables(&[], &facts.path),
        };
        let input = CelInput::new(shared, path_value);
        match condition.evaluate(&self.cel, &input) {
            Ok(true) => Outcome::Matched,
            Ok(false) => not("condition"),
            Err(error) => Outcome::ConditionError(error),
        }
    }
}

fn holds_role(
    role: &Role,
    user: Option<&User>,
    workload: Option<&crate::spiffe::SpiffeId>,
) -> bool {
    if let Some(user) = user {
        if role
            .claim_values
            .iter()
            .any(|value| user.roles.iter().any(|r| *r == **value))
        {
            return true;
        }
        if role.subjects.iter().any(|s| **s == *user.subject) {
            return true;
        }
    }
    workload.is_some_and(|id| role.principals.iter().any(|p| p.matches(id)))
}
