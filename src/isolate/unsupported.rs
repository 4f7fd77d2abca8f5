//! Elsewhere than Linux there are no network namespaces: `--isolate` is refused.

use std::ffi::OsString;
use std::net::IpAddr;

use super::{IsolateError, Options};

/// Never made: [`Sandbox::start`] always fails here.
pub enum Sandbox {}

impl Sandbox {
    /// Refuses: not supported here.
    pub async fn start(_: Options, _: &[OsString]) -> Result<Sandbox, IsolateError> {
        Err(IsolateError::NotSupported)
    }

    pub fn take_listeners(
        &mut self,
    ) -> Option<(std::net::TcpListener, Option<std::net::TcpListener>)> {
        match *self {}
    }

    pub fn udp_factory(&self) -> std::sync::Arc<UdpFactory> {
        match *self {}
    }

    pub async fn spawn(self, _: &[(&str, String)]) -> std::io::Result<tokio::process::Child> {
        match self {}
    }
}

/// Never made.
pub enum UdpFactory {}

impl UdpFactory {
    pub async fn bind(&self, _: IpAddr) -> std::io::Result<tokio::net::UdpSocket> {
        match *self {}
    }
}
