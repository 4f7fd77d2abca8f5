//! Merging layers: a later layer replaces earlier scalars and merges the rule maps entry by
//! entry; the requirements' rules are kept apart so no user layer can remove them.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::keys::{
    AdminScalars, DnsScalars, LimitScalars, LogScalars, MitmScalars, NetworkScalars, RunScalars,
    UpstreamScalars,
};
use crate::policy::{Action, HttpRuleSpec, Mode, Origin, UnixAction};

/// A value and where it was set, so warnings and errors about the effective value can point
/// at the layer that decided it.
#[derive(Debug)]
pub(super) struct Set<T> {
    pub(super) value: T,
    pub(super) origin: Origin,
}

/// The later layer's setting wins when it has one.
pub(super) fn replace<T>(slot: &mut Option<Set<T>>, later: Option<Set<T>>) {
    if later.is_some() {
        *slot = later;
    }
}

/// The listener addresses: each is set by a URL in a user table or a port in the
/// requirements, so it is one slot, not a key of its own.
#[derive(Debug, Default)]
pub(super) struct Listeners {
    pub(super) proxy: Option<Set<SocketAddr>>,
    pub(super) socks: Option<Set<SocketAddr>>,
    pub(super) admin: Option<Set<SocketAddr>>,
}

/// Every setting a later layer replaces as a whole, by table.
#[derive(Debug, Default)]
pub(super) struct Scalars {
    pub(super) network: NetworkScalars,
    pub(super) listeners: Listeners,
    pub(super) dns: DnsScalars,
    pub(super) limits: LimitScalars,
    pub(super) admin: AdminScalars,
    pub(super) log: LogScalars,
    pub(super) upstream: UpstreamScalars,
    pub(super) run: RunScalars,
    pub(super) mitm: MitmScalars,
}

impl Scalars {
    fn override_with(&mut self, later: Scalars) {
        self.network.override_with(later.network);
        replace(&mut self.listeners.proxy, later.listeners.proxy);
        replace(&mut self.listeners.socks, later.listeners.socks);
        replace(&mut self.listeners.admin, later.listeners.admin);
        self.dns.override_with(later.dns);
        self.limits.override_with(later.limits);
        self.admin.override_with(later.admin);
        self.log.override_with(later.log);
        self.upstream.override_with(later.upstream);
        self.run.override_with(later.run);
        self.mitm.override_with(later.mitm);
    }
}

/// A Unix-socket entry as written; `none` only exists until layering removes the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum UnixEntry {
    Allow,
    Deny,
    None,
}

/// One table or the flags, converted and checked, ready to merge.
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) scalars: Scalars,
    /// Domain rules in file order; a list-form table has its allows before its denies, so a
    /// pattern in both lists ends as a deny.
    pub(super) rules: Vec<(String, Action, Origin)>,
    pub(super) unix: Vec<(String, UnixEntry, Origin)>,
    /// `[[http_rules]]` in file order.
    pub(super) http_rules: Vec<HttpRuleSpec>,
}

/// Entries keyed by pattern or path, in the order they were last set.
#[derive(Debug)]
pub(super) struct Entries<V> {
    slots: Vec<Option<(String, V, Origin)>>,
    index: HashMap<String, usize>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries {
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> Entries<V> {
    fn set(&mut self, key: String, value: V, origin: Origin) {
        if let Some(old) = self.index.insert(key.clone(), self.slots.len()) {
            self.slots[old] = None;
        }
        self.slots.push(Some((key, value, origin)));
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.index.remove(key) {
            self.slots[old] = None;
        }
    }

    pub(super) fn into_entries(self) -> impl Iterator<Item = (String, V, Origin)> {
        self.slots.into_iter().flatten()
    }
}

#[derive(Debug, Default)]
pub(super) struct Merged {
    pub(super) scalars: Scalars,
    pub(super) user_rules: Entries<Action>,
    pub(super) managed_rules: Entries<Action>,
    pub(super) unix: Entries<UnixAction>,
    /// A pattern both allowed and denied inside one layer: the deny wins, and says so.
    pub(super) conflicts: Vec<String>,
    /// The mode the requirements set (after [`keep_stricter_mode`]).
    pub(super) managed_mode: Option<Mode>,
    /// Every layer's `[[http_rules]]`, appended in order.
    pub(super) http_rules: Vec<HttpRuleSpec>,
}

impl Merged {
    pub(super) fn apply(&mut self, mut layer: Layer, managed: bool) {
        if managed {
            keep_stricter_mode(&self.scalars.network.mode, &mut layer.scalars.network.mode);
            if let Some(set) = &layer.scalars.network.mode {
                self.managed_mode = Some(set.value);
            }
        }
        self.scalars.override_with(layer.scalars);
        self.http_rules.extend(layer.http_rules);
        let rules = if managed {
            &mut self.managed_rules
        } else {
            &mut self.user_rules
        };
        let mut seen: HashMap<&str, (Action, &Origin)> = HashMap::new();
        for (pattern, action, origin) in &layer.rules {
            match seen.insert(pattern, (*action, origin)) {
                Some((earlier, first)) if earlier != *action => {
                    let (allow, deny) = match action {
                        Action::Deny => (first, origin),
                        Action::Allow => (origin, first),
                    };
                    self.conflicts.push(format!(
                        "`{pattern}` is both allowed ({allow}) and denied ({deny}) in one layer: \
                         the deny wins and the allow has no effect"
                    ));
                }
                _ => {}
            }
        }
        for (pattern, action, origin) in layer.rules {
            rules.set(pattern, action, origin);
        }
        for (path, entry, origin) in layer.unix {
            match entry {
                UnixEntry::Allow => self.unix.set(path, UnixAction::Allow, origin),
                UnixEntry::Deny => self.unix.set(path, UnixAction::Deny, origin),
                UnixEntry::None => self.unix.remove(&path),
            }
        }
    }
}

/// The requirements constrain, they never grant: a managed `mode` overrides the user's only
/// when it is the stricter one, so a managed `limited` wins over a user's `full`, and a managed
/// `full` leaves a user's `limited` in place (the most restrictive mode wins, the same reading
/// as managed denies beating user allows).
fn keep_stricter_mode(user: &Option<Set<Mode>>, managed: &mut Option<Set<Mode>>) {
    let user_limited = matches!(
        user,
        Some(Set {
            value: Mode::Limited,
            ..
        })
    );
    if user_limited
        && matches!(
            managed,
            Some(Set {
                value: Mode::Full,
                ..
            })
        )
    {
        *managed = None;
    }
}
