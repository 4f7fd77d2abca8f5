//! HTTPS inspection's leaf certificates: a cold mint (one ECDSA signature and a rustls server
//! configuration) against a cached lookup (one LRU lookup under the mutex), which is what
//! every connection after a host's first pays.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use egress_proxy::config::MitmConfig;
use egress_proxy::mitm::{Ca, Mitm, CAPACITY};
use egress_proxy::policy::Host;

fn leaves(c: &mut Criterion) {
    let data = tempfile::tempdir().expect("temporary directory");
    let config = MitmConfig {
        enabled: true,
        ..MitmConfig::default()
    };
    let ca = Ca::load_from(&config, data.path()).expect("generate a CA");
    // The CA itself as `upstream_ca`: the machine may have no system roots.
    let cert = ca.paths_of().cert.clone();
    let mitm = Mitm::with_capacity(ca, Some(&cert), CAPACITY).expect("mitm");

    let cached = Host::Name(Cow::Borrowed("cached.example.com"));
    mitm.server_config(&cached).expect("mint");
    c.bench_function("mitm/cached_lookup", |b| {
        b.iter(|| mitm.server_config(black_box(&cached)).expect("cached"))
    });
    let cached_ip = Host::Ip("2001:db8::1".parse().expect("address"));
    mitm.server_config(&cached_ip).expect("mint");
    c.bench_function("mitm/cached_lookup_ipv6", |b| {
        b.iter(|| mitm.server_config(black_box(&cached_ip)).expect("cached"))
    });

    let mut n = 0u64;
    c.bench_function("mitm/cold_mint", |b| {
        b.iter(|| {
            n += 1;
            let host = Host::Name(Cow::Owned(format!("host{n}.example.com")));
            mitm.server_config(&host).expect("mint")
        })
    });
}

criterion_group!(benches, leaves);
criterion_main!(benches);
