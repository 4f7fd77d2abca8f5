//! The hyper floor of the forward keep-alive row: a forward proxy that does nothing but what
//! hyper must, to measure what is left of `serve`'s CPU per request once our own work is gone.
//!
//! ```text
//! cargo build --release --example floor_forward
//! target/release/examples/floor_forward PORT      # then: curl -x 127.0.0.1:PORT http://…
//! ```
//!
//! Everything `serve`'s forward path has around hyper is left out on purpose: no policy, no
//! resolution (the URI's authority must be an `ip:port`), no header rewriting, no metrics, no
//! audit, no timeouts. What stays is what any hyper-based proxy pays: the same runtime (one
//! worker on two cores), hyper's HTTP/1 server on the client connection, a hyper client
//! connection task per origin connection kept for the client connection's next request, and
//! the response body streamed through. `integration/floor.py` runs it as `hyper`.
//!
//! It listens on 127.0.0.1 only, and forwards to any `ip:port` it is sent: a benchmark tool,
//! never a proxy to leave running. Its worker count is `serve`'s default written again
//! (half the cores, at least one), since the CLI's runtime builder is not public.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;

/// The origin connection a client connection kept, and where it goes.
type Kept = Mutex<Option<(SocketAddr, SendRequest<Incoming>)>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: floor_forward PORT")?
        .parse()?;
    let workers = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(stream));
        }
    })
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let kept = Arc::new(Kept::default());
    let service = service_fn(move |req| {
        let kept = Arc::clone(&kept);
        async move { Ok::<_, Infallible>(forward(req, &kept).await) }
    });
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn forward(mut req: Request<Incoming>, kept: &Kept) -> Response<Body> {
    let Some(addr) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            "absolute-form http://ip:port/ only",
        );
    };
    let origin_form = req
        .uri()
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    *req.uri_mut() = origin_form;
    let reused = kept.lock().ok().and_then(|mut k| k.take());
    let mut sender = match reused {
        Some((to, sender)) if to == addr && !sender.is_closed() => sender,
        _ => match connect(addr).await {
            Ok(sender) => sender,
            Err(err) => return answer(StatusCode::BAD_GATEWAY, &err.to_string()),
        },
    };
    if sender.ready().await.is_err() {
        return answer(StatusCode::BAD_GATEWAY, "origin connection closed");
    }
    match sender.send_request(req).await {
        Ok(response) => {
            if let Ok(mut k) = kept.lock() {
                *k = Some((addr, sender));
            }
            response.map(BodyExt::boxed)
        }
        Err(err) => answer(StatusCode::BAD_GATEWAY, &err.to_string()),
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(text.to_owned()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}
