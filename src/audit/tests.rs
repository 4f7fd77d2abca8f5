//! Audit lines, the denial ring, the summary and the first-denial hook.

use super::*;

use std::sync::Arc;

use crate::policy::{Access, Action, Origin, Policy, PolicyOptions, RuleSpec};

/// A decision the rules make without DNS.
fn done(step: crate::policy::Step<'_>) -> Decision {
    step.done().cloned().expect("decided without DNS")
}

#[test]
fn rfc3339_dates() {
    let at = |secs: u64, millis: u64| {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(at(1_795_430_067, 142), "2026-11-23T10:34:27.142Z");
    assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn audit_lines_ring_and_summary() {
    let out = Shared::default();
    let events = Events::new(Some(Box::new(out.clone())));
    let policy = Policy::new(
        &[RuleSpec {
            pattern: "127.0.0.1".into(),
            action: Action::Allow,
            origin: Origin::Api,
            managed: false,
        }],
        &[],
        PolicyOptions::default(),
    )
    .unwrap();
    let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let allowed = Target::parse_authority("127.0.0.1:80", None).unwrap();
    let denied = Target::parse_authority("evil.test:443", None).unwrap();
    let id = events.decision(
        Protocol::Connect,
        client,
        Dest::Target(&allowed),
        &done(policy.decide(&allowed, Access::Tunnel)),
        None,
    );
    for _ in 0..2 {
        events.decision(
            Protocol::Http,
            client,
            Dest::Target(&denied),
            &done(policy.decide(&denied, Access::Tunnel)),
            None,
        );
    }
    let stats = TunnelStats {
        up: 10,
        down: 20,
        idle_timeout: false,
    };
    events.closed(
        id,
        Protocol::Connect,
        client,
        Dest::Target(&allowed),
        Closed {
            stats,
            duration: Duration::from_millis(7),
            revoked: None,
            upstream: None,
        },
    );

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["event"], "decision");
    assert_eq!(lines[0]["id"], id);
    assert_eq!(lines[0]["protocol"], "connect");
    assert_eq!(lines[0]["client"], "127.0.0.1:5555");
    assert_eq!(lines[0]["host"], "127.0.0.1");
    assert_eq!(lines[0]["port"], 80);
    assert_eq!(lines[0]["verdict"], "allow");
    assert_eq!(lines[0]["rule"], "127.0.0.1");
    assert_eq!(lines[0]["ip"], "127.0.0.1");
    assert_eq!(lines[0]["class"], "loopback");
    assert_eq!(lines[1]["verdict"], "block");
    assert_eq!(lines[1]["reason"], "not-allowed");
    assert_eq!(lines[1]["rule"], serde_json::Value::Null);
    assert_eq!(lines[3]["event"], "close");
    assert_eq!(lines[3]["id"], id);
    assert_eq!(lines[3]["bytes_up"], 10);
    assert_eq!(lines[3]["bytes_down"], 20);
    assert_eq!(lines[3]["duration_ms"], 7);

    let recent = events.recent_denials();
    assert_eq!(recent.len(), 2);
    assert_eq!(
        (recent[0].host.as_str(), recent[0].port),
        ("evil.test", Some(443))
    );
    let summary = events.blocked_summary();
    assert!(!summary.truncated);
    assert_eq!(
        summary.blocked,
        [BlockedDest {
            dest: "evil.test:443".to_string(),
            reason: "not-allowed",
            rule: None,
        }]
    );
}

#[test]
fn the_ring_is_bounded() {
    let events = Events::default();
    let policy = Policy::new(&[], &[], PolicyOptions::default()).unwrap();
    let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for port in 1..=(RING as u16 + 10) {
        let t = Target::parse_authority("x.test", Some(port)).unwrap();
        events.decision(
            Protocol::SocksTcp,
            client,
            Dest::Target(&t),
            &done(policy.decide(&t, Access::Tunnel)),
            None,
        );
    }
    let recent = events.recent_denials();
    assert_eq!(recent.len(), RING);
    assert_eq!(recent[0].port, Some(11));
}

/// The hook sees each destination and reason once, never an allowed decision, and stops at
/// the summary's bound, which the summary then admits.
#[test]
fn the_first_denial_hook_runs_once_per_destination_and_reason() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let events = Events::default().on_first_denial(Box::new(move |first| {
        let line = format!(
            "{} {} {} {:?}",
            first.protocol,
            first.dest,
            first.decision.reason(),
            first.dns.map(DnsError::kind)
        );
        record.lock().unwrap().push(line);
    }));
    let rules = [
        ("127.0.0.1", Action::Allow),
        ("denied.test", Action::Deny),
        ("resolved.test", Action::Allow),
    ];
    let policy = Policy::from_rules(&rules, PolicyOptions::default()).unwrap();
    let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let decide = |host: &'static str, port| {
        let t = Target::parse_authority(host, Some(port)).unwrap();
        let d = done(policy.decide(&t, Access::Tunnel));
        (t, d)
    };
    for (host, port) in [
        ("127.0.0.1", 80),
        ("denied.test", 443),
        ("denied.test", 443),
        ("other.test", 443),
        ("denied.test", 80),
        ("127.0.0.1", 80),
    ] {
        let (t, d) = decide(host, port);
        events.decision(Protocol::Connect, client, Dest::Target(&t), &d, None);
    }
    let t = Target::parse_authority("resolved.test", Some(443)).unwrap();
    let failed = match policy.decide(&t, Access::Tunnel) {
        crate::policy::Step::Resolve(pending) => pending.failed(),
        crate::policy::Step::Done(_) => panic!("a name is resolved"),
    };
    for _ in 0..2 {
        events.decision(
            Protocol::SocksTcp,
            client,
            Dest::Target(&t),
            &failed,
            Some(&DnsError::NxDomain),
        );
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "connect denied.test:443 deny-rule None",
            "connect other.test:443 not-allowed None",
            "connect denied.test:80 deny-rule None",
            "socks-tcp resolved.test:443 dns-failed Some(\"nxdomain\")",
        ]
    );
    let summary = events.blocked_summary();
    assert_eq!(summary.blocked.len(), 4);
    let rule = summary.blocked[0].rule.as_ref().expect("the deny rule");
    assert_eq!(
        (&*summary.blocked[0].dest, &*rule.pattern),
        ("denied.test:443", "denied.test")
    );

    seen.lock().unwrap().clear();
    for port in 1..=(SUMMARY as u16) {
        let (t, d) = decide("many.test", port);
        events.decision(Protocol::Http, client, Dest::Target(&t), &d, None);
    }
    assert_eq!(seen.lock().unwrap().len(), SUMMARY - 4, "up to the bound");
    let summary = events.blocked_summary();
    assert_eq!(summary.blocked.len(), SUMMARY);
    assert!(summary.truncated);
}

#[test]
fn request_lines_carry_method_and_path_only() {
    let out = Shared::default();
    let events = Events::new(Some(Box::new(out.clone())));
    let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let target = Target::parse_authority("api.test:443", None).unwrap();
    let record = RequestRecord {
        method: "POST",
        path: "/repos/x/y/issues",
        status: 403,
        outcome: Outcome::Refused,
        reason: Some("method-not-allowed"),
        bytes_up: 0,
        bytes_down: 0,
    };
    events.request(7, client, Dest::Target(&target), &record);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["event"], "request");
    assert_eq!(line["id"], 7);
    assert_eq!(line["protocol"], "connect");
    assert_eq!(line["host"], "api.test");
    assert_eq!(line["port"], 443);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/repos/x/y/issues");
    assert_eq!(line["status"], 403);
    assert_eq!(line["outcome"], "refused");
    assert_eq!(line["reason"], "method-not-allowed");
    assert_eq!(line["bytes_up"], 0);
}
