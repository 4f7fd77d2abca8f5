//! The hot path: one policy decision (canonicalise + match) at 100 to 100k rules, a miss and a
//! hit, and the IP classifier. The target is under 100 ns per decision at 10k rules.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use egress_policy::{
    classify, host, Access, Action, Origin, Policy, PolicyOptions, PublicRanges, RuleSpec, Step,
    Target,
};

/// A realistic mix: mostly exact names and `**.`/`*.` suffix rules, some port-scoped rules,
/// a few denies, in-label globs and CIDRs.
fn rules(n: usize) -> Vec<RuleSpec> {
    (0..n)
        .map(|i| {
            let (pattern, action) = match i % 10 {
                0..=3 => (format!("host{i}.example{}.com", i % 97), Action::Allow),
                4..=5 => (format!("**.svc{i}.example.org"), Action::Allow),
                6 => (format!("*.api{i}.example.net"), Action::Allow),
                7 => (format!("registry{i}.example.io:443"), Action::Allow),
                8 => (format!("blocked{i}.example.com"), Action::Deny),
                _ if i % 1000 == 9 => (format!("region-*.cloud{i}.example.com"), Action::Allow),
                _ => (
                    format!("10.{}.{}.0/24", (i / 256) % 256, i % 256),
                    Action::Deny,
                ),
            };
            RuleSpec {
                pattern,
                action,
                origin: Origin::Api,
                managed: false,
            }
        })
        .collect()
}

fn decide(policy: &Policy, input: &str) -> bool {
    let Ok(target) = Target::parse_authority(input, Some(443)) else {
        return false;
    };
    // An allowed name still needs its answers; the rules' part of the decision is this.
    match policy.decide(&target, Access::Tunnel) {
        Step::Done(decision) => decision.is_allowed(),
        Step::Resolve(_) => true,
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in [100, 1_000, 10_000, 100_000] {
        let policy = Policy::new(&rules(n), &[], PolicyOptions::default()).expect("rules compile");
        let hit_sub = format!("deep.api.svc{}.example.org:443", n - 6);
        let hit_exact = format!("host{}.example{}.com:443", n - 10, (n - 10) % 97);
        assert!(decide(&policy, &hit_sub), "{hit_sub} must be allowed");
        assert!(decide(&policy, &hit_exact), "{hit_exact} must be allowed");
        assert!(!decide(&policy, "www.unlisted-domain.example:443"));
        group.bench_with_input(BenchmarkId::new("miss", n), &policy, |b, p| {
            b.iter(|| decide(p, black_box("www.unlisted-domain.example:443")))
        });
        group.bench_with_input(BenchmarkId::new("hit-exact", n), &policy, |b, p| {
            b.iter(|| decide(p, black_box(&hit_exact)))
        });
        group.bench_with_input(BenchmarkId::new("hit-subdomain", n), &policy, |b, p| {
            b.iter(|| decide(p, black_box(&hit_sub)))
        });
    }
    group.finish();
}

fn canonicaliser(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalise");
    for input in [
        "api.github.com",
        "API.GitHub.com.",
        "bücher.example",
        "127.0.0.1",
        "127.0.0.1.",
        "0x7f.1",
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(input), input, |b, i| {
            b.iter(|| host::canonicalize(black_box(i)).is_ok())
        });
    }
    group.finish();
}

fn classifier(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let ips: [(&str, IpAddr); 4] = [
        ("public-v4", "93.184.216.34".parse().unwrap()),
        ("loopback-v4", "127.0.0.1".parse().unwrap()),
        ("public-v6", "2606:4700:4700::1111".parse().unwrap()),
        ("mapped-v6", "::ffff:10.0.0.1".parse().unwrap()),
    ];
    for (name, ip) in ips {
        group.bench_with_input(BenchmarkId::from_parameter(name), &ip, |b, ip| {
            b.iter(|| classify(black_box(*ip)))
        });
    }
    group.finish();
}

/// The address checks of a decision at 1k rules: an IP-literal destination (public and
/// non-public) and a name's answers, the paths a declared public range adds a lookup to.
fn addresses(c: &mut Criterion) {
    let mut group = c.benchmark_group("addresses");
    let mut specs = rules(1_000);
    specs.push(RuleSpec {
        pattern: "*".to_string(),
        action: Action::Allow,
        origin: Origin::Api,
        managed: false,
    });
    let plain = Policy::new(&specs, &[], PolicyOptions::default()).expect("rules compile");
    // The same rules with two declared public ranges: only non-public addresses look them up.
    let ranges = ["198.18.0.0/15", "192.0.2.0/24"].map(|r| r.parse().expect("declarable"));
    let options = PolicyOptions {
        public_ranges: PublicRanges::new(ranges),
        ..PolicyOptions::default()
    };
    let declared = Policy::new(&specs, &[], options).expect("rules compile");
    for (name, policy) in [("literal", &plain), ("declared-literal", &declared)] {
        for input in [
            "93.184.216.34:443",
            "192.0.2.7:443",
            "[::ffff:192.0.2.7]:443",
        ] {
            group.bench_with_input(BenchmarkId::new(name, input), input, |b, i| {
                b.iter(|| decide(policy, black_box(i)))
            });
        }
    }
    let target = Target::parse_authority("www.unlisted-domain.example:443", None).unwrap();
    let public: [IpAddr; 2] = [
        "93.184.216.34".parse().unwrap(),
        "2606:4700::1".parse().unwrap(),
    ];
    let in_range: [IpAddr; 2] = ["198.18.0.7".parse().unwrap(), "198.19.0.9".parse().unwrap()];
    let cases = [
        ("answers", &plain, &public),
        ("declared-answers", &declared, &public),
        ("declared-answers-in-range", &declared, &in_range),
    ];
    for (name, policy, answers) in cases {
        group.bench_function(name, |b| {
            b.iter(|| match policy.decide(&target, Access::Tunnel) {
                Step::Resolve(pending) => pending.resolved(black_box(answers)).is_allowed(),
                Step::Done(_) => unreachable!("`*` allows the name"),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decisions, canonicaliser, classifier, addresses);
criterion_main!(benches);
