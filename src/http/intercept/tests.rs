//! The engine between real TLS clients and a local HTTPS origin, all on loopback: a test CA
//! signs the engine's leaf (what a client trusts) and the origin's (what the engine trusts).

mod clients;
mod curl;
mod failures;
mod hostile;
mod serving;
mod websocket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::testing::origin::HttpsOrigin;
use super::testing::{listen, TestCa, H1, H2_H1, NAME};
use super::{Hooks, InterceptError, InterceptStats};
use crate::audit::{Outcome, RequestRecord};
use crate::config::Limits;
use crate::gate::Denied;
use crate::policy::{Access, Action, Mode, Policy, PolicyOptions, Step, Target};

/// Hooks that refuse POST outside `/upload` (as `limited` plus a rule would) and keep every
/// check and record.
#[derive(Default)]
pub(super) struct TestHooks {
    pub(super) checked: Mutex<Vec<(String, String, bool)>>,
    pub(super) records: Mutex<Vec<Recorded>>,
}

/// A [`RequestRecord`], owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Recorded {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) outcome: Outcome,
    pub(super) reason: Option<&'static str>,
    pub(super) bytes: [u64; 2],
}

impl Hooks for TestHooks {
    fn check(&self, method: &Method, path: &str, body: bool) -> Result<(), Denied> {
        let seen = (method.to_string(), path.to_string(), body);
        self.checked.lock().unwrap().push(seen);
        if method == Method::POST && !path.starts_with("/upload") {
            return Err(method_not_allowed());
        }
        Ok(())
    }

    fn record(&self, r: &RequestRecord<'_>) {
        self.records.lock().unwrap().push(Recorded {
            method: r.method.to_string(),
            path: r.path.to_string(),
            status: r.status,
            outcome: r.outcome,
            reason: r.reason,
            bytes: [r.bytes_up, r.bytes_down],
        });
    }
}

impl TestHooks {
    pub(super) fn records(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }
}

/// The decision `limited` makes for a POST, made by the policy engine.
fn method_not_allowed() -> Denied {
    let options = PolicyOptions {
        mode: Mode::Limited,
        ..PolicyOptions::default()
    };
    let policy = Policy::from_rules(&[(NAME, Action::Allow)], options).unwrap();
    let target = Target::parse_authority(NAME, Some(443)).unwrap();
    let access = Access::Http {
        method: "POST",
        body: true,
        path: "/",
    };
    let Step::Done(decision) = policy.decide(&target, access) else {
        panic!("a POST in limited mode is decided without DNS");
    };
    Denied {
        decision,
        dns: None,
    }
}

/// The engine on a loopback listener, one [`serve`] per accepted connection, each result
/// sent to `results`.
pub(super) struct Engine {
    pub(super) addr: SocketAddr,
    pub(super) ca: Arc<TestCa>,
    pub(super) hooks: Arc<TestHooks>,
    pub(super) results: mpsc::UnboundedReceiver<Result<InterceptStats, InterceptError>>,
}

/// How a test sets the engine up.
pub(super) struct Setup {
    /// Where the dial goes.
    pub(super) origin: SocketAddr,
    /// The CONNECT target's port (the origin's, unless a test says otherwise).
    pub(super) port: u16,
    /// Trusted for the origin.
    pub(super) origin_ca: Arc<TestCa>,
    pub(super) limits: Limits,
}

impl Setup {
    pub(super) fn new(origin: SocketAddr, origin_ca: Arc<TestCa>) -> Setup {
        Setup {
            origin,
            port: origin.port(),
            origin_ca,
            limits: Limits {
                header_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        }
    }
}

impl Engine {
    pub(super) async fn start(setup: Setup) -> Engine {
        let ca = Arc::new(TestCa::new());
        let hooks = Arc::new(TestHooks::default());
        let engine_hooks: Arc<dyn Hooks> = Arc::clone(&hooks) as Arc<dyn Hooks>;
        let listening = listen(
            ca.server(&[NAME], H2_H1),
            Target::parse_authority(NAME, Some(setup.port))
                .unwrap()
                .into_owned(),
            setup.origin,
            &setup.origin_ca,
            setup.limits,
            engine_hooks,
        )
        .await;
        Engine {
            addr: listening.addr,
            ca,
            hooks,
            results: listening.results,
        }
    }

    /// The next connection's result.
    pub(super) async fn result(&mut self) -> Result<InterceptStats, InterceptError> {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .expect("the engine ended the connection")
            .unwrap()
    }
}

/// An origin for `NAME` offering `alpn`, with its own CA, and the engine in front of it.
async fn world(alpn: &[&[u8]]) -> (Engine, HttpsOrigin) {
    let origin_ca = Arc::new(TestCa::new());
    let origin = HttpsOrigin::start(origin_ca.server(&[NAME], alpn)).await;
    let engine = Engine::start(Setup::new(origin.addr, origin_ca)).await;
    (engine, origin)
}

/// `allowed.test:PORT`, the Host a client of the tunnel sends.
fn host(origin: &HttpsOrigin) -> String {
    format!("{NAME}:{}", origin.addr.port())
}
