//! The bench's world (the `bench` feature only: the engine's tests do not use it).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Method;
use rustls::ClientConfig;

use super::origin::HttpsOrigin;
use super::{listen, TestCa, H2_H1, NAME};
use crate::audit::RequestRecord;
use crate::config::Limits;
use crate::gate::Denied;
use crate::http::intercept::Hooks;
use crate::policy::Target;

/// The bench's world: an HTTPS origin for [`NAME`] and the engine in front of it, allowing
/// everything.
pub struct BenchWorld {
    /// The engine's listener.
    pub engine: SocketAddr,
    /// The origin's, for the direct comparison.
    pub origin: SocketAddr,
    /// Trusts the engine's CA.
    pub engine_client: Arc<ClientConfig>,
    /// Trusts the origin's CA.
    pub origin_client: Arc<ClientConfig>,
}

/// Hooks that allow every request and record nothing.
struct AllowAll;

impl Hooks for AllowAll {
    fn check(&self, _: &Method, _: &str, _: bool) -> Result<(), Denied> {
        Ok(())
    }

    fn record(&self, _: &RequestRecord<'_>) {}
}

/// Starts the bench's world on the current runtime; clients offer `alpn`.
pub async fn bench_world(alpn: &[&[u8]]) -> BenchWorld {
    let (origin_ca, engine_ca) = (TestCa::new(), TestCa::new());
    let origin = HttpsOrigin::start(origin_ca.server(&[NAME], H2_H1)).await;
    let target = Target::parse_authority(NAME, Some(origin.addr.port())).unwrap();
    let listening = listen(
        engine_ca.server(&[NAME], H2_H1),
        target.into_owned(),
        origin.addr,
        &origin_ca,
        Limits::default(),
        Arc::new(AllowAll),
    )
    .await;
    BenchWorld {
        engine: listening.addr,
        origin: origin.addr,
        engine_client: engine_ca.client(alpn),
        origin_client: origin_ca.client(alpn),
    }
}
