//! Every metric the proxy exports, named once: the call sites use these consts, and
//! [`install`] describes each of them to the Prometheus recorder, so the list `/metrics`
//! documents cannot drift from what the code counts.
//!
//! Label keys stay literals at the call sites: the `metrics` macros build a static key only
//! from literal labels, so a const key would allocate on every increment.

use std::sync::OnceLock;

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Counter `{protocol, verdict, reason}`: policy decisions.
pub(crate) const DECISIONS: &str = "egress_decisions_total";
/// Counter `{protocol, direction}`: bytes relayed for allowed connections.
pub(crate) const BYTES: &str = "egress_bytes_total";
/// Gauge `{protocol}`: open CONNECT and SOCKS5 TCP tunnels.
pub(crate) const ACTIVE_TUNNELS: &str = "egress_active_tunnels";
/// Counter `{protocol, reason}`: open tunnels a new policy generation closed.
pub(crate) const TUNNELS_REVOKED: &str = "egress_tunnels_revoked_total";
/// Gauge: open SOCKS5 UDP associations.
pub(crate) const UDP_ASSOCIATIONS: &str = "egress_udp_associations";
/// Counter `{result}`: client datagrams of closed UDP associations.
pub(crate) const UDP_DATAGRAMS: &str = "egress_udp_datagrams_total";
/// Counter `{result}`: policy reloads.
pub(crate) const RELOADS: &str = "egress_reloads_total";
/// Histogram `{result}`, seconds: DNS lookups.
pub(crate) const DNS_LOOKUP_SECONDS: &str = "egress_dns_lookup_seconds";
/// Histogram `{result}`, seconds: connects to checked destination addresses.
pub(crate) const CONNECT_SECONDS: &str = "egress_connect_seconds";
/// Counter `{kind, result}`: connections opened through an upstream proxy (`kind`: http,
/// https, socks5, socks5h; `result`: ok, unreachable, tls, auth, refused).
pub(crate) const UPSTREAM_CONNECTS: &str = "egress_upstream_connects_total";
/// Counter: leaf certificates minted for intercepted hosts (a cached host mints none).
pub(crate) const MITM_LEAVES_MINTED: &str = "egress_mitm_leaves_minted_total";
/// Counter `{result}`: requests inside intercepted TLS tunnels (`forwarded`, `refused`,
/// `failed`).
pub(crate) const INTERCEPTED_REQUESTS: &str = "egress_intercepted_requests_total";
/// Counter `{side}`: TLS handshakes of intercepted tunnels that failed, with the client or
/// with the origin.
pub(crate) const TLS_FAILURES: &str = "egress_tls_failures_total";
/// Counter: audit lines that could not be written.
pub(crate) const AUDIT_WRITE_ERRORS: &str = "egress_audit_write_errors_total";

/// Histogram buckets, in seconds: DNS lookups and connects take from well under a millisecond
/// on loopback to the multi-second timeouts.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder, once per process;
/// later calls return the same handle. `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot install the metrics recorder; /metrics is disabled");
                    None
                }
            }
        })
        .clone()
}

/// The `# HELP` and unit of every metric.
fn describe() {
    describe_counter!(
        DECISIONS,
        "Policy decisions by protocol, verdict and reason code"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes relayed for allowed connections, by protocol and direction (up = client to destination)"
    );
    describe_gauge!(
        ACTIVE_TUNNELS,
        "Open tunnels (CONNECT, SOCKS5 TCP), by protocol"
    );
    describe_counter!(
        TUNNELS_REVOKED,
        "Open tunnels a reload or mode switch closed, by protocol and the new reason code"
    );
    describe_gauge!(UDP_ASSOCIATIONS, "Open SOCKS5 UDP associations");
    describe_counter!(
        UDP_DATAGRAMS,
        "Client datagrams of closed UDP associations: relayed, denied by policy, dropped (fragments, malformed, foreign source)"
    );
    describe_counter!(
        RELOADS,
        "Policy reloads (SIGHUP, POST /reload or a policy file change) by result"
    );
    describe_histogram!(
        DNS_LOOKUP_SECONDS,
        Unit::Seconds,
        "DNS lookup latency by result"
    );
    describe_histogram!(
        CONNECT_SECONDS,
        Unit::Seconds,
        "Latency of connecting to a checked destination address, by result"
    );
    describe_counter!(
        UPSTREAM_CONNECTS,
        "Tunnels and forward connections opened through the upstream proxy, by its kind and the result"
    );
    describe_counter!(
        MITM_LEAVES_MINTED,
        "Leaf certificates minted for intercepted hosts (each host once while it stays cached)"
    );
    describe_counter!(
        INTERCEPTED_REQUESTS,
        "Requests inside intercepted TLS tunnels: forwarded to the origin, refused inside TLS, or failed at the origin"
    );
    describe_counter!(
        TLS_FAILURES,
        "Failed TLS handshakes of intercepted tunnels, by side (client or origin)"
    );
    describe_counter!(AUDIT_WRITE_ERRORS, "Audit lines that could not be written");
}
