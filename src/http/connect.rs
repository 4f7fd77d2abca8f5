//! CONNECT tunnels: decide, resolve once, dial the checked address (or open the tunnel through
//! the upstream proxy), answer 200, splice.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::respond;
use super::{denial, Body};
use crate::audit::{Dest, Protocol};
use crate::net::route::{open, relay};
use crate::net::{Ctx, Established};
use crate::policy::{Access, Target};
use crate::respond::Refusal;

/// `slot` is the client connection's permit (`max_connections`); the tunnel holds it until it
/// ends.
pub async fn handle(
    mut req: Request<Incoming>,
    client: SocketAddr,
    ctx: &Ctx,
    slot: Arc<OwnedSemaphorePermit>,
) -> Response<Body> {
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let Some(authority) = authority else {
        return respond::response(&Refusal::BadRequest("CONNECT needs host:port"));
    };
    let Ok(target) = Target::parse_authority(&authority, None) else {
        let denied = ctx.refuse_invalid(Protocol::Connect, client, &authority);
        return denial(Dest::Raw(&authority), &denied);
    };
    let routed = ctx
        .route(Protocol::Connect, client, &target, Access::Tunnel)
        .await;
    let (id, route) = match routed {
        Ok(routed) => routed,
        Err(denied) => return denial(Dest::Target(&target), &denied),
    };
    let dest = target.to_string();
    let opened = match open(&route, &target, ctx.limits.connect_timeout).await {
        Ok(opened) => opened,
        Err(error) => return respond::response(&Refusal::open(&dest, &error)),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ctx = ctx.clone();
    let target = target.into_owned();
    let open = ctx.drain.guard();
    tokio::spawn(async move {
        let (_slot, _open) = (slot, open);
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%client, dest, error = %err, "CONNECT upgrade failed");
                return;
            }
        };
        // The client side is our own TCP socket (the listener serves nothing else): splice it
        // directly, after passing on whatever the client sent behind the CONNECT request.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!(%client, dest, "CONNECT upgrade is not a TCP socket");
            return;
        };
        let mut upstream = opened.stream;
        if !parts.read_buf.is_empty() && upstream.write_all(&parts.read_buf).await.is_err() {
            return;
        }
        let allowed = Established {
            id,
            protocol: Protocol::Connect,
            client,
            target: &target,
            route: &route,
            dialled: opened.dialled,
        };
        let mut client_io = parts.io.into_inner();
        if let Err(err) = relay(&ctx, allowed, &mut client_io, upstream, &opened.early).await {
            tracing::debug!(%client, dest, error = %err, "tunnel ended before it started");
        }
    });
    let mut response = Response::new(respond::full(""));
    *response.status_mut() = StatusCode::OK;
    response
}
