//! What a finished connection moved, as the audit `close` lines and the byte counters report
//! it. Defined here, with the lines that print them, so the relays fill the audit's
//! vocabulary instead of the audit schema depending on a relay's internals.

/// What went through a finished tunnel (CONNECT, SOCKS5 TCP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
    /// The relay ended because neither side sent anything for the idle timeout.
    pub idle_timeout: bool,
}

/// What went through one SOCKS5 UDP association.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Client datagrams sent on to an allowed destination.
    pub sent: u64,
    /// Datagrams from a destination relayed back to the client.
    pub received: u64,
    /// Client datagrams to a destination the policy denied.
    pub denied: u64,
    /// Everything else dropped: a foreign source, a fragment, a malformed header, a reply
    /// on a route a reload has since denied, a failed send. (Replies from an address we never
    /// sent to do not reach the relay: the kernel drops them.)
    pub dropped: u64,
    /// Payload bytes of `sent` datagrams.
    pub bytes_up: u64,
    /// Payload bytes of `received` datagrams.
    pub bytes_down: u64,
}
