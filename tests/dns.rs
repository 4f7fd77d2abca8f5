//! `egress_proxy::dns::Resolver` against the fake DNS server on loopback.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use tokio::time::Instant;

use egress_proxy::config::DnsConfig;
use egress_proxy::dns::{DnsError, Resolver};
use support::fake_dns::{Answer, FakeDns};

const TIMEOUT: Duration = Duration::from_millis(2000);

fn resolver(dns: &FakeDns, timeout: Duration) -> Resolver {
    Resolver::new(&DnsConfig {
        servers: vec![dns.addr],
        timeout,
        ..DnsConfig::default()
    })
    .expect("build resolver")
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_record() {
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![v4("127.0.0.1")]))]);
    let got = resolver(&dns, TIMEOUT).lookup("allowed.test").await;
    assert_eq!(got, Ok(ips(&["127.0.0.1"])));
    // One lookup asks A and AAAA once each.
    assert_eq!(dns.queries("allowed.test"), 2);
}

#[tokio::test]
async fn aaaa_record() {
    let dns = FakeDns::start(vec![("six.test", Answer::Aaaa(vec![v6("::1")]))]);
    let got = resolver(&dns, TIMEOUT).lookup("six.test").await;
    assert_eq!(got, Ok(ips(&["::1"])));
}

#[tokio::test]
async fn every_answer_deduplicated_in_order() {
    let answer = Answer::A(vec![
        v4("127.0.0.3"),
        v4("127.0.0.1"),
        v4("127.0.0.3"),
        v4("10.0.0.1"),
    ]);
    let dns = FakeDns::start(vec![("many.test", answer)]);
    let got = resolver(&dns, TIMEOUT).lookup("many.test").await;
    assert_eq!(got, Ok(ips(&["127.0.0.3", "127.0.0.1", "10.0.0.1"])));
}

#[tokio::test]
async fn mixed_families_a_first() {
    let answer = Answer::Mixed(
        vec![v4("127.0.0.1"), v4("192.168.1.1")],
        vec![v6("::1"), v6("fd00::1")],
    );
    let dns = FakeDns::start(vec![("mixed.test", answer)]);
    let got = resolver(&dns, TIMEOUT).lookup("mixed.test").await;
    assert_eq!(
        got,
        Ok(ips(&["127.0.0.1", "192.168.1.1", "::1", "fd00::1"]))
    );
}

#[tokio::test]
async fn nxdomain() {
    let dns = FakeDns::start(vec![("gone.test", Answer::NxDomain)]);
    let err = resolver(&dns, TIMEOUT)
        .lookup("gone.test")
        .await
        .unwrap_err();
    assert_eq!(err, DnsError::NxDomain);
    assert_eq!(err.kind(), "nxdomain");
}

#[tokio::test]
async fn unlisted_name_is_nxdomain() {
    let dns = FakeDns::start(vec![]);
    let err = resolver(&dns, TIMEOUT)
        .lookup("unknown.test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "nxdomain");
}

#[tokio::test]
async fn no_records() {
    let dns = FakeDns::start(vec![("empty.test", Answer::A(vec![]))]);
    let err = resolver(&dns, TIMEOUT)
        .lookup("empty.test")
        .await
        .unwrap_err();
    assert_eq!(err, DnsError::NoRecords);
    assert_eq!(err.kind(), "no-records");
}

#[tokio::test]
async fn servfail_is_an_error() {
    let dns = FakeDns::start(vec![("broken.test", Answer::ServFail)]);
    let err = resolver(&dns, TIMEOUT)
        .lookup("broken.test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "error", "{err}");
}

#[tokio::test]
async fn refused_is_an_error_not_a_timeout() {
    let dns = FakeDns::start(vec![("refused.test", Answer::Refused)]);
    let started = Instant::now();
    let err = resolver(&dns, TIMEOUT)
        .lookup("refused.test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "error", "{err}");
    assert!(started.elapsed() < TIMEOUT / 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn silent_server_times_out() {
    let timeout = Duration::from_millis(300);
    let dns = FakeDns::start(vec![("slow.test", Answer::NoReply)]);
    let started = Instant::now();
    let err = resolver(&dns, timeout)
        .lookup("slow.test")
        .await
        .unwrap_err();
    assert_eq!(err, DnsError::Timeout(timeout));
    assert_eq!(err.kind(), "timeout");
    assert_eq!(err.to_string(), "timed out after 300 ms");
    // Generous: only catches a lookup that ignores the configured timeout.
    assert!(started.elapsed() < timeout + Duration::from_secs(3));
}

#[tokio::test]
async fn one_silent_family_still_returns_the_other() {
    let dns = FakeDns::start(vec![(
        "half.test",
        Answer::ASilentAaaa(vec![v4("127.0.0.1")]),
    )]);
    let got = resolver(&dns, TIMEOUT).lookup("half.test").await;
    assert_eq!(got, Ok(ips(&["127.0.0.1"])));
}

#[tokio::test]
async fn ttl_zero_answers_change_between_lookups() {
    // A rebinding name: public first, then loopback. Only pinning the first answer for the
    // connection (done by the caller) keeps the checked address and the dialled one the same.
    let answer = Answer::Sequence(vec![
        Answer::A(vec![v4("93.184.216.34")]),
        Answer::A(vec![v4("127.0.0.1")]),
    ]);
    let dns = FakeDns::start(vec![("rebind.test", answer)]);
    let resolver = resolver(&dns, TIMEOUT);
    assert_eq!(
        resolver.lookup("rebind.test").await,
        Ok(ips(&["93.184.216.34"]))
    );
    assert_eq!(
        resolver.lookup("rebind.test").await,
        Ok(ips(&["127.0.0.1"]))
    );
    assert_eq!(dns.queries("rebind.test"), 4);
}

#[test]
fn error_labels_and_messages() {
    assert_eq!(DnsError::NxDomain.to_string(), "nxdomain: no such name");
    assert_eq!(DnsError::NoRecords.kind(), "no-records");
    assert_eq!(
        DnsError::Timeout(Duration::from_millis(2000)).to_string(),
        "timed out after 2000 ms"
    );
    assert_eq!(DnsError::Other("refused".into()).kind(), "error");
}
