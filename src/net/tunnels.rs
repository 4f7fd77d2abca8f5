//! The open TCP tunnels (CONNECT and SOCKS5 CONNECT), so that a new policy generation closes
//! the ones it no longer allows instead of letting them outlive the reload that denies them.
//!
//! The registry's lock is taken when a tunnel opens, when it closes and on reload, never per
//! byte. Re-deciding needs no DNS: the name goes through the domain rules again, and the
//! address actually dialled through the IP rules and the classifier, as if the name had
//! resolved to it alone; a tunnel an upstream proxy opened by a name never resolved here is
//! re-decided by the domain rules alone. A UDP association needs none of this: it re-decides its cached
//! routes the same way ([`Policy::recheck`]) on its next datagram after a reload.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use crate::audit::Protocol;
use crate::policy::{Decision, Policy, Step, Target};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every open tunnel, by its decision id.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: Mutex<FastMap<u64, Entry>>,
}

/// What re-deciding one tunnel needs.
#[derive(Debug)]
struct Entry {
    protocol: Protocol,
    client: SocketAddr,
    target: Target<'static>,
    /// The address the tunnel is connected to; `None` for a name sent unresolved to the
    /// upstream proxy.
    dialled: Option<IpAddr>,
    /// The embedder's decider allowed it (no rule did): its consent stands on a reload.
    asked: bool,
    /// The interception engine serves it: a reload may keep it inspected, where an opaque
    /// tunnel the new rules want inspected is revoked.
    intercepted: bool,
    revocation: Arc<Revocation>,
}

/// What a reload must know of how a tunnel was allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decided {
    /// The embedder's decider allowed it (no rule did).
    pub asked: bool,
    /// The interception engine serves it.
    pub intercepted: bool,
}

/// Set once, by the generation that denies the tunnel; the relay waits for it.
#[derive(Debug, Default)]
struct Revocation {
    decision: OnceLock<Decision>,
    notify: Notify,
}

/// What a tunnel's relay waits on besides its sockets: completes once a new policy generation
/// denies the tunnel.
#[derive(Debug)]
pub struct Revoked(Arc<Revocation>);

impl Revoked {
    pub async fn wait(self) {
        // `notify_one` leaves a permit when nobody waits yet, so a revocation that comes
        // before the relay first polls this is not lost.
        self.0.notify.notified().await;
    }
}

/// A tunnel's place in the registry; dropping it takes the tunnel out.
#[derive(Debug)]
pub struct Registration<'a> {
    tunnels: &'a Tunnels,
    id: u64,
    revocation: Arc<Revocation>,
}

impl Registration<'_> {
    /// The future the relay selects on.
    pub fn revoked(&self) -> Revoked {
        Revoked(Arc::clone(&self.revocation))
    }

    /// The decision of the generation that closed the tunnel, if one did.
    pub fn revocation(&self) -> Option<&Decision> {
        self.revocation.decision.get()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.tunnels.lock().remove(&self.id);
    }
}

impl Tunnels {
    /// Adds an allowed tunnel connected to `dialled`, by the id of its decision.
    pub fn register(
        &self,
        id: u64,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        dialled: Option<IpAddr>,
        how: Decided,
    ) -> Registration<'_> {
        let Decided { asked, intercepted } = how;
        let revocation = Arc::new(Revocation::default());
        let entry = Entry {
            protocol,
            client,
            target: target.clone().into_owned(),
            dialled,
            asked,
            intercepted,
            revocation: Arc::clone(&revocation),
        };
        self.lock().insert(id, entry);
        Registration {
            tunnels: self,
            id,
            revocation,
        }
    }

    /// Re-decides every open tunnel under `policy` and closes the ones it denies; returns how
    /// many it closed.
    pub fn recheck(&self, policy: &Policy) -> usize {
        self.revoke_denied(policy, None)
    }

    /// Re-decides one tunnel: for a tunnel decided by an older generation than the one that
    /// was current when it registered, whose reload may have walked the registry before it.
    pub fn recheck_one(&self, policy: &Policy, id: u64) -> usize {
        self.revoke_denied(policy, Some(id))
    }

    fn revoke_denied(&self, policy: &Policy, only: Option<u64>) -> usize {
        let mut closed = 0;
        self.lock().retain(|&id, entry| {
            if only.is_some_and(|only| only != id) {
                return true;
            }
            let decision = recheck(policy, entry);
            if decision.is_allowed() {
                return true;
            }
            let reason = decision.reason().code();
            tracing::info!(
                id,
                protocol = entry.protocol.as_str(),
                client = %entry.client,
                dest = %entry.target,
                ip = ?entry.dialled,
                reason,
                "closing a tunnel the new policy denies"
            );
            metrics::counter!(
                crate::metrics::TUNNELS_REVOKED,
                "protocol" => entry.protocol.as_str(),
                "reason" => reason
            )
            .increment(1);
            let _ = entry.revocation.decision.set(decision);
            entry.revocation.notify.notify_one();
            closed += 1;
            false
        });
        closed
    }

    fn lock(&self) -> MutexGuard<'_, FastMap<u64, Entry>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The decision `policy` makes for an open tunnel, without DNS. An opaque tunnel the new rules
/// want intercepted is revoked; an intercepted one stays so.
fn recheck(policy: &Policy, entry: &Entry) -> Decision {
    let decision = match (entry.dialled, entry.asked) {
        (Some(ip), false) => policy.recheck(&entry.target, ip),
        (Some(ip), true) => policy.recheck_asked(&entry.target, ip),
        (None, asked) => {
            let access = crate::policy::Access::Tunnel;
            let step = if asked {
                policy.decide_asked(&entry.target, access, true)
            } else {
                policy.decide(&entry.target, access)
            };
            match step {
                Step::Done(decision) => decision,
                Step::Resolve(pending) => pending.unresolved().decision().clone(),
            }
        }
    };
    if entry.intercepted {
        decision
    } else {
        decision.uninspected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MultiAnswer;
    use crate::policy::{Action, Mode, PolicyOptions, Reason};

    fn policy(rules: &[(&str, Action)], allow_local_binding: bool) -> Policy {
        let options = PolicyOptions {
            allow_local_binding,
            multi_answer: MultiAnswer::BlockIfAnyNonPublic,
            ..PolicyOptions::default()
        };
        Policy::from_rules(rules, options).expect("test rules compile")
    }

    #[test]
    fn redecides_the_name_and_the_dialled_address() {
        let name = Target::parse_authority("allowed.test:443", None).unwrap();
        let ip = Target::parse_authority("127.0.0.1:443", None).unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let open = policy(
            &[
                ("allowed.test", Action::Allow),
                ("127.0.0.1", Action::Allow),
            ],
            true,
        );
        assert!(open.recheck(&name, loopback).is_allowed());
        assert!(open.recheck(&ip, loopback).is_allowed());
        let cases = [
            // The name is now denied.
            (
                policy(&[("allowed.test", Action::Deny)], true),
                &name,
                public,
                Reason::DenyRule,
            ),
            // The name is still allowed, but the address it was pinned to no longer is.
            (
                policy(&[("allowed.test", Action::Allow)], false),
                &name,
                loopback,
                Reason::DnsNonPublic(crate::policy::IpClass::Loopback),
            ),
            (
                policy(
                    &[
                        ("allowed.test", Action::Allow),
                        ("93.184.216.0/24", Action::Deny),
                    ],
                    true,
                ),
                &name,
                public,
                Reason::DenyRule,
            ),
            (
                policy(&[("allowed.test", Action::Allow)], true),
                &ip,
                loopback,
                Reason::NotAllowed,
            ),
            (
                open.with_mode(Mode::Limited),
                &name,
                loopback,
                Reason::MitmRequired,
            ),
        ];
        for (policy, target, dialled, reason) in cases {
            let decision = policy.recheck(target, dialled);
            assert!(!decision.is_allowed(), "{target} via {dialled}");
            assert_eq!(decision.reason(), reason, "{target} via {dialled}");
        }
    }

    #[tokio::test]
    async fn recheck_revokes_only_denied_tunnels() {
        let tunnels = Tunnels::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let kept = Target::parse_authority("kept.test:80", None).unwrap();
        let gone = Target::parse_authority("gone.test:80", None).unwrap();
        let a = tunnels.register(
            1,
            Protocol::Connect,
            client,
            &kept,
            Some(loopback),
            Decided::default(),
        );
        let b = tunnels.register(
            2,
            Protocol::SocksTcp,
            client,
            &gone,
            Some(loopback),
            Decided::default(),
        );
        let rules = [("kept.test", Action::Allow), ("gone.test", Action::Deny)];
        let new = policy(&rules, true);
        assert_eq!(tunnels.recheck(&new), 1);
        // Revoked before anyone waited: the relay still sees it.
        tokio::time::timeout(std::time::Duration::from_secs(1), b.revoked().wait())
            .await
            .expect("revoked");
        assert_eq!(b.revocation().map(|d| d.reason()), Some(Reason::DenyRule));
        assert!(a.revocation().is_none());
        // Only the survivor is left to re-decide; an unrelated id is not touched.
        assert_eq!(tunnels.recheck_one(&policy(&[], true), 3), 0);
        assert_eq!(tunnels.lock().len(), 1);
        drop(a);
        assert!(tunnels.lock().is_empty());
        drop(b);
    }

    /// A tunnel the embedder's decider allowed keeps its consent across a reload that still
    /// matches no rule for it, and is closed by one that denies it.
    #[test]
    fn a_decider_allowed_tunnel_survives_a_reload_until_a_rule_denies_it() {
        let tunnels = Tunnels::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        let asked = Target::parse_authority("asked.test:443", None).unwrap();
        let unasked = Target::parse_authority("unasked.test:443", None).unwrap();
        let a = tunnels.register(
            1,
            Protocol::Connect,
            client,
            &asked,
            Some(public),
            Decided {
                asked: true,
                intercepted: false,
            },
        );
        let b = tunnels.register(
            2,
            Protocol::Connect,
            client,
            &unasked,
            Some(public),
            Decided::default(),
        );
        assert_eq!(
            tunnels.recheck(&policy(&[], false)),
            1,
            "only the rule-less one closes"
        );
        assert!(a.revocation().is_none());
        assert_eq!(b.revocation().map(|d| d.reason()), Some(Reason::NotAllowed));
        let deny = policy(&[("asked.test", Action::Deny)], false);
        assert_eq!(tunnels.recheck(&deny), 1);
        assert_eq!(a.revocation().map(|d| d.reason()), Some(Reason::DenyRule));
    }

    /// A reload that wants a host's requests seen closes its opaque tunnels, resolved or
    /// not; tunnels to other hosts stay.
    #[test]
    fn a_reload_that_wants_requests_inspected_closes_opaque_tunnels() {
        use crate::policy::{HttpRuleSpec, InspectionSpec, Origin};
        let tunnels = Tunnels::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        let ruled = Target::parse_authority("api.test:443", None).unwrap();
        let other = Target::parse_authority("other.test:443", None).unwrap();
        let a = tunnels.register(
            1,
            Protocol::Connect,
            client,
            &ruled,
            Some(public),
            Decided::default(),
        );
        let b = tunnels.register(
            2,
            Protocol::SocksTcp,
            client,
            &ruled,
            None,
            Decided::default(),
        );
        let c = tunnels.register(
            3,
            Protocol::Connect,
            client,
            &other,
            Some(public),
            Decided::default(),
        );
        let rules = [("api.test", Action::Allow), ("other.test", Action::Allow)];
        let http = [HttpRuleSpec {
            host: "api.test".into(),
            methods: vec!["GET".into()],
            paths: Vec::new(),
            action: Action::Allow,
            origin: Origin::Api,
        }];
        let off = policy(&rules, false)
            .with_http(&http, &InspectionSpec::default())
            .unwrap();
        assert_eq!(tunnels.recheck(&off), 0, "no interception: nothing to see");
        let on = InspectionSpec {
            enabled: true,
            domains: None,
        };
        let inspecting = policy(&rules, false).with_http(&http, &on).unwrap();
        assert_eq!(tunnels.recheck(&inspecting), 2);
        for t in [&a, &b] {
            assert_eq!(
                t.revocation().map(|d| d.reason()),
                Some(Reason::MitmRequired)
            );
        }
        assert!(c.revocation().is_none());
    }

    /// A name the upstream resolved is re-decided by the rules alone.
    #[test]
    fn an_unresolved_tunnel_is_redecided_by_its_name() {
        let tunnels = Tunnels::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let named = Target::parse_authority("named.test:443", None).unwrap();
        let other = Target::parse_authority("other.test:443", None).unwrap();
        let a = tunnels.register(
            1,
            Protocol::Connect,
            client,
            &named,
            None,
            Decided::default(),
        );
        let b = tunnels.register(
            2,
            Protocol::Connect,
            client,
            &other,
            None,
            Decided::default(),
        );
        let rules = [("named.test", Action::Allow), ("other.test", Action::Deny)];
        assert_eq!(tunnels.recheck(&policy(&rules, false)), 1);
        assert!(a.revocation().is_none());
        assert_eq!(b.revocation().map(|d| d.reason()), Some(Reason::DenyRule));
    }
}
