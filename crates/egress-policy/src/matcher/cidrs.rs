//! IP-range rules, one hash table per prefix length.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Entry, Table};
use crate::classifier::{mask128, mask32};

/// CIDR rules grouped by prefix length, longest first: a lookup is one hash probe per
/// distinct length, however many ranges there are.
#[derive(Debug, Default)]
pub(super) struct Cidrs {
    v4: Vec<(u8, Table<u32>)>,
    v6: Vec<(u8, Table<u128>)>,
}

impl Cidrs {
    /// Files `entry` under the network of `net` in the table of its prefix length.
    pub(super) fn insert(&mut self, net: IpNet, entry: Entry) {
        fn slot<K: std::hash::Hash + Eq>(
            tables: &mut Vec<(u8, Table<K>)>,
            len: u8,
            key: K,
        ) -> &mut Vec<Entry> {
            let i = match tables.iter().position(|(l, _)| *l <= len) {
                Some(i) if tables[i].0 == len => i,
                Some(i) => {
                    tables.insert(i, (len, HashMap::default()));
                    i
                }
                None => {
                    tables.push((len, HashMap::default()));
                    tables.len() - 1
                }
            };
            tables[i].1.entry(key).or_default()
        }
        match net {
            IpNet::V4(net) => {
                slot(&mut self.v4, net.prefix_len(), u32::from(net.network())).push(entry);
            }
            IpNet::V6(net) => {
                slot(&mut self.v6, net.prefix_len(), u128::from(net.network())).push(entry);
            }
        }
    }

    /// Entries of every range that contains `ip` with a prefix of at most `max_len`, most
    /// specific first.
    #[inline]
    pub(super) fn containing(&self, ip: IpAddr, max_len: u8) -> impl Iterator<Item = &Entry> {
        let (v4, v6) = match ip {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip);
                let hits = self
                    .v4
                    .iter()
                    .filter(move |(len, _)| *len <= max_len)
                    .filter_map(move |(len, table)| table.get(&(bits & mask32(*len))));
                (Some(hits), None)
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip);
                let hits = self
                    .v6
                    .iter()
                    .filter(move |(len, _)| *len <= max_len)
                    .filter_map(move |(len, table)| table.get(&(bits & mask128(*len))));
                (None, Some(hits))
            }
        };
        v4.into_iter()
            .flatten()
            .chain(v6.into_iter().flatten())
            .flatten()
    }
}
