//! Name rules by their text, and the allocation-free walk over a host's label-boundary
//! suffixes that looks them up.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::Entry;
use crate::host::last_dot;
use crate::pattern::glob_label_matches;

/// An in-label glob (`api-*.example.com`), kept under the literal labels after its last glob
/// label.
#[derive(Debug)]
pub(super) struct Glob {
    labels: Box<[Box<str>]>,
    pub(super) entry: Entry,
}

impl Glob {
    /// Whether `host` has as many labels as the glob and each label matches its glob label.
    #[inline]
    pub(super) fn matches(&self, host: &str) -> bool {
        host.split('.').count() == self.labels.len()
            && self
                .labels
                .iter()
                .zip(host.split('.'))
                .all(|(glob, label)| glob_label_matches(glob, label))
    }
}

/// The rules attached to one name.
#[derive(Debug)]
pub(super) struct Node {
    name: Box<str>,
    /// Exact rules and the apex of `**.` rules.
    pub(super) exact: Vec<Entry>,
    /// `*.` and `**.` rules: they cover every name below this one.
    pub(super) below: Vec<Entry>,
    /// In-label globs whose labels after the last glob label spell this name.
    pub(super) globs: Vec<Glob>,
}

/// Rule names by their text. A host is looked up once per label-boundary suffix, but only at
/// the depths (label counts) some rule has, and each probed suffix is hashed on its own with
/// foldhash (per-process seed): one or two short hashes beat a byte-serial rolling hash over
/// the whole host.
#[derive(Debug, Default)]
pub(super) struct Names {
    table: HashTable<Node>,
    state: RandomState,
    /// Bit `k` is set when some node has `k` labels (the last bit stands for 63 or more).
    depths: u64,
}

/// The `depths` bit of a name with `labels` labels.
#[inline]
fn depth_bit(labels: usize) -> u64 {
    1 << labels.min(63)
}

impl Names {
    /// The node for `name`, created empty if no rule named it yet.
    pub(super) fn node_mut(&mut self, name: &str) -> &mut Node {
        let state = &self.state;
        self.depths |= depth_bit(name.split('.').count());
        self.table
            .entry(
                state.hash_one(name),
                |n| &*n.name == name,
                |n| state.hash_one(&n.name),
            )
            .or_insert_with(|| Node {
                name: name.into(),
                exact: Vec::new(),
                below: Vec::new(),
                globs: Vec::new(),
            })
            .into_mut()
    }

    /// Files a glob under the name its labels after the last glob label spell, so the walk
    /// meets it at that suffix.
    pub(super) fn insert_glob(&mut self, labels: &[String], entry: Entry) {
        let last_glob = labels.iter().rposition(|l| l.contains('*')).unwrap_or(0);
        let key = labels[last_glob + 1..].join(".");
        let glob = Glob {
            labels: labels.iter().map(|l| l.as_str().into()).collect(),
            entry,
        };
        self.node_mut(&key).globs.push(glob);
    }

    /// The node for exactly `name`, if some rule named it.
    #[inline]
    pub(super) fn get(&self, name: &str) -> Option<&Node> {
        self.table
            .find(self.state.hash_one(name), |n| &*n.name == name)
    }

    /// Calls `visit` for every label-boundary suffix of `host` that has a node, shortest
    /// first, then for `host` itself (`whole = true`), until `visit` returns false.
    ///
    /// `#[inline]`, like `get` and `depth_bit`: the lookups that drive the walk live in the
    /// parent module, and the hot path must not depend on how the compiler splits modules
    /// into codegen units (the walk, its helpers and the `visit` closure stay one function).
    #[inline]
    pub(super) fn walk<'a>(&'a self, host: &str, mut visit: impl FnMut(&'a Node, bool) -> bool) {
        let mut labels = 1;
        let mut end = host.len();
        while let Some(dot) = last_dot(&host.as_bytes()[..end]) {
            if self.depths & depth_bit(labels) != 0 {
                if let Some(node) = self.get(&host[dot + 1..]) {
                    if !visit(node, false) {
                        return;
                    }
                }
            }
            labels += 1;
            if self.depths >> labels.min(63) == 0 {
                // No rule name has this many labels: nothing further left can match.
                return;
            }
            end = dot;
        }
        if self.depths & depth_bit(labels) != 0 {
            if let Some(node) = self.get(host) {
                visit(node, true);
            }
        }
    }
}
