//! The hint for a denial that a declared public range could lift: a network whose resolver
//! answers public names from a special-purpose range (fake-IP DNS, a transparent gateway, a
//! tailnet) sees every name refused until it says so, and the denial alone does not tell it how.

use crate::policy::{Decision, Reason};

/// For a `dns-non-public:<class>` or `non-public-ip:<class>` denial whose address a declared
/// public range could open, one sentence naming the classifier's range and the flag that
/// declares it. `None` for every other decision, including classes that can never be declared
/// (loopback, link-local, …).
///
/// It may go to the client: it names no file path, and no resolved address, only the
/// classifier's row, which the reason code's class already gives away (the sandboxed child
/// must not learn private DNS answers from a denial, as `/check` hides them too).
pub fn public_range_hint(decision: &Decision) -> Option<String> {
    let d = decision.declarable()?;
    let (ip, class, range) = (d.ip, d.class, d.range);
    Some(match decision.reason() {
        Reason::DnsNonPublic(_) => format!(
            "the resolver answered with a {class} address ({range}); if this network's DNS \
             answers from that range, declare it: --public-range {range}"
        ),
        _ => format!(
            "{ip} is in the {class} range {range}; if this network routes it to public \
             destinations, declare it: --public-range {range}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::{Access, Action, Policy, PolicyOptions, Step, Target};

    fn decide(p: &Policy, target: &str, answers: &[&str]) -> Decision {
        let target = Target::parse_authority(target, Some(443)).unwrap();
        match p.decide(&target, Access::Tunnel) {
            Step::Done(d) => d,
            Step::Resolve(pending) => {
                let answers: Vec<IpAddr> = answers.iter().map(|a| a.parse().unwrap()).collect();
                pending.resolved(&answers)
            }
        }
    }

    #[test]
    fn only_declarable_denials_get_a_hint() {
        let rules = [("*", Action::Allow), ("denied.test", Action::Deny)];
        let p = Policy::from_rules(&rules, PolicyOptions::default()).unwrap();
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            (
                "crates.test",
                &["198.18.0.7"],
                Some("the resolver answered with a benchmarking address (198.18.0.0/15); if this network's DNS answers from that range, declare it: --public-range 198.18.0.0/15"),
            ),
            (
                "crates.test",
                &["::ffff:192.0.2.7", "192.0.2.8"],
                Some("the resolver answered with a documentation address (192.0.2.0/24); if this network's DNS answers from that range, declare it: --public-range 192.0.2.0/24"),
            ),
            // a public answer beside a private one looks like rebinding, not a fake-IP resolver
            ("crates.test", &["93.184.216.34", "10.0.0.1"], None),
            (
                "100.64.1.2",
                &[],
                Some("100.64.1.2 is in the cgnat range 100.64.0.0/10; if this network routes it to public destinations, declare it: --public-range 100.64.0.0/10"),
            ),
            ("crates.test", &["127.0.0.1"], None),
            ("crates.test", &["169.254.169.254"], None),
            ("crates.test", &["198.18.0.7", "127.0.0.1"], None),
            ("crates.test", &["93.184.216.34"], None),
            ("169.254.169.254", &[], None),
            ("100.100.100.200", &[], None),
            ("denied.test", &[], None),
        ];
        for (target, answers, expected) in cases {
            let d = decide(&p, target, answers);
            assert_eq!(
                public_range_hint(&d).as_deref(),
                *expected,
                "{target} {answers:?}"
            );
        }
    }
}
