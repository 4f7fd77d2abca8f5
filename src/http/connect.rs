//! CONNECT tunnels: decide, resolve once, dial the checked address, answer 200, splice.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::respond::{self, Failure};
use super::Body;
use crate::audit::{self, Protocol};
use crate::net::{dial::dial, relay::relay, Ctx, Denied};
use crate::policy::{Access, Decision, Target};

pub async fn handle(mut req: Request<Incoming>, client: SocketAddr, ctx: &Ctx) -> Response<Body> {
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let Some(authority) = authority else {
        return respond::response(&Failure::BadRequest("CONNECT needs host:port"));
    };
    let target = match Target::parse_authority(&authority, None) {
        Ok(target) => target,
        Err(_) => {
            let denied = Denied {
                decision: Decision::invalid_host(),
                dns: None,
            };
            audit::decision(Protocol::Connect, client, &authority, &denied.decision);
            return respond::response(&Failure::Denied {
                dest: &authority,
                denied: &denied,
            });
        }
    };
    let dest = target.to_string();
    let pinned = match ctx.gate.authorize(&target, Access::Tunnel).await {
        Ok(pinned) => pinned,
        Err(denied) => {
            audit::decision(Protocol::Connect, client, &dest, &denied.decision);
            return respond::response(&Failure::Denied {
                dest: &dest,
                denied: &denied,
            });
        }
    };
    audit::decision(Protocol::Connect, client, &dest, &pinned.decision);
    let mut upstream = match dial(&pinned.addrs, ctx.limits.connect_timeout).await {
        Ok(stream) => stream,
        Err(error) => {
            return respond::response(&Failure::Dial {
                dest: &dest,
                error: &error,
            })
        }
    };
    let idle = ctx.limits.idle_timeout;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%client, dest, error = %err, "CONNECT upgrade failed");
                return;
            }
        };
        let mut upgraded = TokioIo::new(upgraded);
        match relay(&mut upgraded, &mut upstream, idle).await {
            Ok(stats) => tracing::debug!(
                %client, dest, up = stats.up, down = stats.down, idle_timeout = stats.idle_timeout,
                "tunnel closed"
            ),
            Err(err) => tracing::debug!(%client, dest, error = %err, "tunnel ended with an error"),
        }
    });
    let mut response = Response::new(respond::full(""));
    *response.status_mut() = StatusCode::OK;
    response
}
