//! CONNECT: decide, resolve once, dial a checked address, reply, splice.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::Addr;
use crate::audit::Protocol;
use crate::net::dial::dial;
use crate::net::splice::relay_tcp;
use crate::net::{tunnel, Ctx, Established};
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
    let allowed = match super::authorize(ctx, Protocol::SocksTcp, client, addr, port).await {
        Ok(allowed) => allowed,
        Err(denied) => {
            let dest = super::written(addr, port);
            let refusal = Refusal::Denied {
                dest: &dest,
                denied: &denied,
            };
            return super::reject(&mut stream, client, &refusal).await;
        }
    };
    let mut upstream = match dial(&allowed.pinned, ctx.limits.connect_timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            let dest = allowed.target.to_string();
            let refusal = Refusal::Dial {
                dest: &dest,
                error: &error,
            };
            return super::reject(&mut stream, client, &refusal).await;
        }
    };
    let bound = match upstream.local_addr() {
        Ok(bound) => bound,
        Err(error) => return super::reject(&mut stream, client, &Refusal::Local(&error)).await,
    };
    if super::succeed(&mut stream, bound).await.is_err() {
        return;
    }
    if !early.is_empty() && upstream.write_all(early).await.is_err() {
        return;
    }
    let idle = ctx.limits.idle_timeout;
    let opened = Established {
        id: allowed.id,
        protocol: Protocol::SocksTcp,
        client,
        target: &allowed.target,
        pinned: &allowed.pinned,
    };
    tunnel(ctx, opened, &upstream, |revoked| {
        relay_tcp(&stream, &upstream, idle, revoked.wait())
    })
    .await;
}
