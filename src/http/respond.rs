//! HTTP responses: a [`Refusal`] rendered from the one wire table ([`crate::respond`]), and
//! the body helper every response uses.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;

use super::Body;
use crate::respond::{self, Refusal};

/// The response to `refusal`: status, `x-proxy-error`, `x-proxy-reason` and the one-line body.
pub fn response(refusal: &Refusal<'_>) -> Response<Body> {
    let answer = respond::http(refusal);
    let mut response = Response::new(full(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-proxy-error", HeaderValue::from_static(answer.error));
    if let Some(reason) = answer.reason {
        headers.insert("x-proxy-reason", HeaderValue::from_static(reason));
    }
    response
}

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}
