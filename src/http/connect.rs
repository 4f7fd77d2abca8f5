//! CONNECT tunnels: decide, resolve once, dial the checked address (or open the tunnel through
//! the upstream proxy), answer 200, splice. A tunnel the policy wants inspected goes to the
//! interception engine instead ([`inspected`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

mod inspected;

use super::respond;
use super::{denial, Body};
use crate::audit::{Dest, Protocol};
use crate::gate::Denied;
use crate::net::rewind::Rewind;
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
    // A copy (reference counts) for the target to borrow from while `req` is upgraded.
    let uri = req.uri().clone();
    let Some(authority) = uri.authority().map(|a| a.as_str()) else {
        return respond::response(&Refusal::BadRequest("CONNECT needs host:port"));
    };
    let Ok(target) = Target::parse_authority(authority, None) else {
        let denied = ctx.refuse_invalid(Protocol::Connect, client, authority);
        return denial(Dest::Raw(authority), &denied);
    };
    let routed = ctx
        .route(Protocol::Connect, client, &target, Access::Tunnel)
        .await;
    let target = target.into_owned();
    let (id, route) = match routed {
        Ok(routed) => routed,
        Err(denied) => return refuse(&mut req, client, ctx, slot, target, denied),
    };
    if let (true, Some(mitm)) = (route.decision().intercept(), ctx.mitm.clone()) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let route = Arc::new(route);
        return after_200(
            ctx,
            slot,
            on_upgrade,
            client,
            move |ctx, client_io, early| async move {
                let client_io = Rewind::new(early, client_io);
                let allowed = Established {
                    id,
                    protocol: Protocol::Connect,
                    client,
                    target: &target,
                    route: &route,
                    dialled: route.checked_ip(),
                };
                inspected::allowed(&ctx, &mitm, client_io, allowed, Arc::clone(&route)).await;
            },
        );
    }
    let opened = match open(&route, &target, ctx.limits.connect_timeout).await {
        Ok(opened) => opened,
        Err(error) => return respond::response(&Refusal::open(&target.to_string(), &error)),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    after_200(
        ctx,
        slot,
        on_upgrade,
        client,
        move |ctx, mut client_io, early| async move {
            let mut upstream = opened.stream;
            if !early.is_empty() && upstream.write_all(&early).await.is_err() {
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
            if let Err(err) = relay(&ctx, allowed, &mut client_io, upstream, &opened.early).await {
                tracing::debug!(%client, dest = %target, error = %err, "tunnel ended before it started");
            }
        },
    )
}

/// A denied CONNECT: the 403 on the CONNECT itself, or, for a name under an explicit
/// `[mitm] domains` pattern, a 200 and the 403 inside TLS, where the client shows it.
fn refuse(
    req: &mut Request<Incoming>,
    client: SocketAddr,
    ctx: &Ctx,
    slot: Arc<OwnedSemaphorePermit>,
    target: Target<'static>,
    denied: Denied,
) -> Response<Body> {
    let mitm = ctx.mitm.clone();
    let Some(mitm) = mitm.filter(|_| ctx.gate.current().answers_inside_tls(&target)) else {
        return denial(Dest::Target(&target), &denied);
    };
    let on_upgrade = hyper::upgrade::on(req);
    after_200(
        ctx,
        slot,
        on_upgrade,
        client,
        move |ctx, client_io, early| async move {
            let client_io = Rewind::new(early, client_io);
            inspected::denied(&ctx, &mitm, client_io, target, denied).await;
        },
    )
}

/// Answers 200 and, once hyper gives the connection up, runs `serve` on the client's socket
/// (holding the connection's permit and drain guard) with whatever the client sent behind the
/// CONNECT request.
fn after_200<F, Fut>(
    ctx: &Ctx,
    slot: Arc<OwnedSemaphorePermit>,
    on_upgrade: OnUpgrade,
    client: SocketAddr,
    serve: F,
) -> Response<Body>
where
    F: FnOnce(Ctx, TcpStream, Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let ctx = ctx.clone();
    let open = ctx.drain.guard();
    tokio::spawn(async move {
        let (_slot, _open) = (slot, open);
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%client, error = %err, "CONNECT upgrade failed");
                return;
            }
        };
        // The client side is our own TCP socket (the listener serves nothing else).
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!(%client, "CONNECT upgrade is not a TCP socket");
            return;
        };
        serve(ctx, parts.io.into_inner(), parts.read_buf).await;
    });
    let mut response = Response::new(respond::full(""));
    *response.status_mut() = StatusCode::OK;
    response
}
