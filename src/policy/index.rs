//! The rule index: host, then a trie of path segments.
//!
//! A lookup returns only the rules whose host and path patterns can match,
//! so decision time grows with the depth of the path and the number of rules
//! that really apply, not with the size of the bundle.

use std::collections::HashMap;

use super::pattern::{HostPattern, PathPattern, Segment};
use crate::request::NormalizedPath;

/// A rule and the index of the path pattern that brought it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub rule: u32,
    /// Index into the rule's path patterns; `u32::MAX` for a rule without paths.
    pub pattern: u32,
}

pub const NO_PATTERN: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    /// Child for `{variable}` and `*` segments.
    any_segment: Option<Box<Node>>,
    /// Rules whose pattern ends exactly at this node.
    exact: Vec<Candidate>,
    /// Rules whose pattern ends with `/**` at this node.
    rest: Vec<Candidate>,
}

impl Node {
    fn insert(&mut self, pattern: &PathPattern, candidate: Candidate) {
        let mut node = self;
        for segment in &pattern.segments {
            node = match segment {
                Segment::Literal(text) => node.literal.entry(text.clone()).or_default(),
                Segment::Variable(_) | Segment::Wildcard => {
                    node.any_segment.get_or_insert_with(Box::default)
                }
            };
        }
        if pattern.rest {
            node.rest.push(candidate);
        } else {
            node.exact.push(candidate);
        }
    }

    fn collect(&self, segments: &[&str], out: &mut Vec<Candidate>) {
        out.extend_from_slice(&self.rest);
        let Some((first, remaining)) = segments.split_first() else {
            out.extend_from_slice(&self.exact);
            return;
        };
        if let Some(child) = self.literal.get(*first) {
            child.collect(remaining, out);
        }
        if !first.is_empty()
            && let Some(child) = &self.any_segment
        {
            child.collect(remaining, out);
        }
    }
}

/// Rules indexed by host pattern and path.
#[derive(Debug, Default)]
pub struct RuleIndex {
    exact_hosts: HashMap<Box<str>, Node>,
    /// `*.suffix` hosts in the order the bundle first names them.
    suffix_hosts: Vec<(Box<str>, Node)>,
    any_host: Node,
}

impl RuleIndex {
    /// Adds a rule under each of its hosts (or any host) and each of its
    /// path patterns (or every path).
    pub fn insert(&mut self, rule: u32, hosts: &[HostPattern], paths: &[PathPattern]) {
        if hosts.is_empty() || hosts.contains(&HostPattern::Any) {
            insert_paths(&mut self.any_host, rule, paths);
            return;
        }
        for host in hosts {
            match host {
                HostPattern::Any => {}
                HostPattern::Exact(name) => {
                    let node = self.exact_hosts.entry(name.clone()).or_default();
                    insert_paths(node, rule, paths);
                }
                HostPattern::Suffix(suffix) => {
                    let position = self.suffix_hosts.iter().position(|(s, _)| s == suffix);
                    let index = position.unwrap_or_else(|| {
                        self.suffix_hosts.push((suffix.clone(), Node::default()));
                        self.suffix_hosts.len() - 1
                    });
                    if let Some((_, node)) = self.suffix_hosts.get_mut(index) {
                        insert_paths(node, rule, paths);
                    }
                }
            }
        }
    }

    /// Appends every candidate for this host and path to `out`, sorted by
    /// rule and pattern, without duplicates.
    pub fn candidates(&self, host: &str, path: &NormalizedPath, out: &mut Vec<Candidate>) {
        let mut segments: [&str; 32] = [""; 32];
        let count = path.segment_count();
        let owned: Vec<&str>;
        let segments: &[&str] = if count <= segments.len() {
            for (slot, segment) in segments.iter_mut().zip(path.segments()) {
                *slot = segment;
            }
            &segments[..count]
        } else {
            owned = path.segments().collect();
            &owned
        };

        self.any_host.collect(segments, out);
        if let Some(node) = self.exact_hosts.get(host) {
            node.collect(segments, out);
        }
        for (suffix, node) in &self.suffix_hosts {
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                node.collect(segments, out);
            }
        }

        out.sort_unstable();
        out.dedup();
    }
}

fn insert_paths(node: &mut Node, rule: u32, paths: &[PathPattern]) {
    if paths.is_empty() {
        node.rest.push(Candidate {
            rule,
            pattern: NO_PATTERN,
        });
        return;
    }
    for (index, pattern) in paths.iter().enumerate() {
        node.insert(
            pattern,
            Candidate {
                rule,
                pattern: index as u32,
            },
        );
    }
}
