//! The association's decision cache: one policy decision per destination as the client wrote
//! it, kept while the policy generation that made it is current, and the reverse map that
//! labels replies and drops datagrams from anyone we did not send to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::codec;
use crate::gate::Gate;
use crate::policy::Policy;
use crate::socks5;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Destinations remembered per association; past it the cache starts over.
const MAX_DESTINATIONS: usize = 1024;

/// A cached decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Send to this checked address.
    Allowed(SocketAddr),
    Denied,
}

/// Decisions for this association's destinations, valid for one policy generation.
pub(super) struct Routes {
    generation: Arc<Policy>,
    /// Keyed by ATYP..DST.PORT as the client wrote it, so a known destination costs one hash
    /// and no canonicalisation.
    by_dest: FastMap<Box<[u8]>, Route>,
    /// Checked address → the destination as the client wrote it: labels replies, and drops
    /// datagrams from anyone we did not send to.
    by_source: FastMap<SocketAddr, Box<[u8]>>,
}

impl Routes {
    pub(super) fn new(generation: Arc<Policy>) -> Self {
        Routes {
            generation,
            by_dest: FastMap::default(),
            by_source: FastMap::default(),
        }
    }

    /// After a reload, keeps the routes the new generation still allows to the same address
    /// (decided again without DNS, as open tunnels are), so replies in flight are not lost;
    /// the rest are forgotten and decided afresh on their next datagram.
    pub(super) fn refresh(&mut self, gate: &Gate) {
        let current = gate.policy().load();
        if Arc::ptr_eq(&current, &self.generation) {
            return;
        }
        self.generation = Arc::clone(&current);
        let policy = &self.generation;
        let still_allowed = |dest: &[u8], addr: SocketAddr| {
            codec::parse_dest(dest)
                .and_then(|(host, port)| socks5::target(host, port).ok())
                .is_some_and(|target| {
                    policy
                        .recheck(&target, addr.ip())
                        .uninspected()
                        .is_allowed()
                })
        };
        self.by_dest.retain(|dest, route| match *route {
            Route::Allowed(addr) => still_allowed(dest, addr),
            Route::Denied => false,
        });
        let by_dest = &self.by_dest;
        self.by_source.retain(
            |addr, dest| matches!(by_dest.get(dest), Some(Route::Allowed(kept)) if kept == addr),
        );
    }

    pub(super) fn get(&self, dest: &[u8]) -> Option<Route> {
        self.by_dest.get(dest).copied()
    }

    pub(super) fn insert(&mut self, dest: &[u8], route: Route) {
        if self.by_dest.len() >= MAX_DESTINATIONS {
            self.clear();
        }
        if let Route::Allowed(addr) = route {
            self.by_source.insert(addr, dest.into());
        }
        self.by_dest.insert(dest.into(), route);
    }

    /// The destination, as the client wrote it, that a reply from `from` answers; `None`
    /// for an address no datagram was sent to under the current generation.
    pub(super) fn dest_of(&self, from: SocketAddr) -> Option<&[u8]> {
        self.by_source.get(&from).map(|dest| &dest[..])
    }

    fn clear(&mut self) {
        self.by_dest.clear();
        self.by_source.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::udp::tests::{gate, policy};

    #[test]
    fn routes_are_bounded_and_forgotten_on_reload() {
        let gate = gate(policy(&["127.0.0.1"]));
        let mut routes = Routes::new(gate.current());
        let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
        routes.insert(b"\x01\x7f\x00\x00\x01\x00\x07", Route::Allowed(addr));
        routes.refresh(&gate);
        assert_eq!(
            routes.get(b"\x01\x7f\x00\x00\x01\x00\x07"),
            Some(Route::Allowed(addr))
        );
        assert_eq!(routes.by_source.len(), 1);

        for i in 0..MAX_DESTINATIONS as u16 {
            routes.insert(&i.to_be_bytes(), Route::Denied);
        }
        // The last insert found the cache full: it started over with that one entry.
        assert_eq!(routes.by_dest.len(), 1);
        assert_eq!(routes.get(b"\x01\x7f\x00\x00\x01\x00\x07"), None);
        assert!(routes.by_source.is_empty(), "the cache started over");

        routes.insert(b"x", Route::Denied);
        gate.policy().store(Arc::new(policy(&["127.0.0.2"])));
        routes.refresh(&gate);
        assert_eq!(routes.get(b"x"), None);
        assert!(Arc::ptr_eq(&routes.generation, &gate.current()));
    }

    /// A reload keeps what the new policy still allows, so replies in flight reach the client;
    /// what it denies, and every denial, is decided again.
    #[test]
    fn a_reload_keeps_the_routes_it_still_allows() {
        let gate = gate(policy(&["127.0.0.1", "127.0.0.2"]));
        let mut routes = Routes::new(gate.current());
        let one: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let two: SocketAddr = "127.0.0.2:7".parse().unwrap();
        let to_one = b"\x01\x7f\x00\x00\x01\x00\x07";
        let to_two = b"\x01\x7f\x00\x00\x02\x00\x07";
        let denied = b"\x01\x7f\x00\x00\x03\x00\x07";
        routes.insert(to_one, Route::Allowed(one));
        routes.insert(to_two, Route::Allowed(two));
        routes.insert(denied, Route::Denied);

        gate.policy()
            .store(Arc::new(policy(&["127.0.0.1", "127.0.0.2"])));
        routes.refresh(&gate);
        assert_eq!(routes.get(to_one), Some(Route::Allowed(one)));
        assert_eq!(routes.get(to_two), Some(Route::Allowed(two)));
        assert_eq!(routes.get(denied), None, "a denial is decided again");
        assert_eq!(routes.by_source.len(), 2);

        gate.policy().store(Arc::new(policy(&["127.0.0.1"])));
        routes.refresh(&gate);
        assert_eq!(routes.get(to_one), Some(Route::Allowed(one)));
        assert_eq!(routes.get(to_two), None);
        assert_eq!(
            routes.by_source.get(&one).map(|d| &d[..]),
            Some(&to_one[..])
        );
        assert!(!routes.by_source.contains_key(&two));
    }
}
