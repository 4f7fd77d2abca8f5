//! CONNECT: decide, resolve once, dial a checked address (or open the tunnel through the
//! upstream proxy), reply, splice.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::Addr;
use crate::audit::Protocol;
use crate::net::route::{open, relay};
use crate::net::{Ctx, Established};
use crate::policy::Access;
use crate::respond::Refusal;

/// Serves one CONNECT request. `early` is what the client sent after the request without
/// waiting for our reply; it goes upstream first (and is not in the closed line's byte count).
pub async fn connect(
    mut stream: TcpStream,
    client: SocketAddr,
    addr: Addr<'_>,
    port: u16,
    early: &[u8],
    ctx: &Ctx,
) {
    let protocol = Protocol::SocksTcp;
    let routed = match super::target_of(ctx, protocol, client, addr, port) {
        Ok(target) => ctx
            .route(protocol, client, &target, Access::Tunnel)
            .await
            .map(|(id, route)| (target, id, route)),
        Err(denied) => Err(denied),
    };
    let (target, id, route) = match routed {
        Ok(routed) => routed,
        Err(denied) => {
            let dest = super::written(addr, port);
            let refusal = Refusal::Denied {
                dest: &dest,
                denied: &denied,
            };
            return super::reject(&mut stream, client, &refusal).await;
        }
    };
    let mut opened = match open(&route, &target, ctx.limits.connect_timeout).await {
        Ok(opened) => opened,
        Err(error) => {
            let dest = target.to_string();
            return super::reject(&mut stream, client, &Refusal::open(&dest, &error)).await;
        }
    };
    let bound = match opened.stream.tcp().local_addr() {
        Ok(bound) => bound,
        Err(error) => return super::reject(&mut stream, client, &Refusal::Local(&error)).await,
    };
    if super::succeed(&mut stream, bound).await.is_err() {
        return;
    }
    if !early.is_empty() && opened.stream.write_all(early).await.is_err() {
        return;
    }
    let established = Established {
        id,
        protocol,
        client,
        target: &target,
        route: &route,
        dialled: opened.dialled,
    };
    let _ = relay(ctx, established, &mut stream, opened.stream, &opened.early).await;
}
