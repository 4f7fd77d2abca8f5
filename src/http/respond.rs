//! HTTP responses: a [`Refusal`] rendered from the one wire table ([`crate::respond`]) as a
//! line of text, or as one JSON object for a client that asks for it, and the body helper
//! every response uses.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, PROXY_AUTHENTICATE,
};
use hyper::Response;

use super::Body;
use crate::respond::{self, Refusal};

/// The JSON form of a refusal, carried with its response until the request's `Accept` header
/// decides which form is sent ([`prefer_json`]).
#[derive(Clone, Debug)]
struct JsonForm(Bytes);

/// The codes of a refusal of ours, carried with its response so an intercepted request's
/// audit line can name them without parsing headers back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codes {
    /// `x-proxy-error`.
    pub error: &'static str,
    /// `x-proxy-reason`.
    pub reason: Option<&'static str>,
}

/// The response to `refusal`: status, `x-proxy-error`, `x-proxy-reason` and the one-line body.
pub fn response(refusal: &Refusal<'_>) -> Response<Body> {
    let answer = respond::http(refusal);
    let mut response = Response::new(full(answer.body));
    *response.status_mut() = answer.status;
    let extensions = response.extensions_mut();
    extensions.insert(JsonForm(Bytes::from(answer.json)));
    extensions.insert(Codes {
        error: answer.error,
        reason: answer.reason,
    });
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-proxy-error", HeaderValue::from_static(answer.error));
    if let Some(reason) = answer.reason {
        headers.insert("x-proxy-reason", HeaderValue::from_static(reason));
    }
    if let Some(challenge) = answer.challenge {
        headers.insert(PROXY_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

/// Whether the request lists `application/json` among the media types it accepts (with a
/// non-zero weight). A wildcard does not count: a client that did not name JSON gets text.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/json") && !refused
        })
}

/// Turns a refusal of ours into its JSON form; any other response (an upstream's) is left as
/// it is.
pub fn prefer_json(response: &mut Response<Body>) {
    let Some(JsonForm(json)) = response.extensions_mut().remove::<JsonForm>() else {
        return;
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.remove(CONTENT_LENGTH);
    *response.body_mut() = full(json);
}

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_names_json() {
        let cases = [
            ("application/json", true),
            ("text/html, Application/JSON;charset=utf-8", true),
            ("application/json;q=0.5, text/plain", true),
            ("application/json;q=0", false),
            ("*/*", false),
            ("application/*", false),
            ("text/plain", false),
            ("application/jsonx", false),
        ];
        for (accept, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_str(accept).unwrap());
            assert_eq!(wants_json(&headers), want, "{accept}");
        }
        assert!(!wants_json(&HeaderMap::new()));
        let mut two = HeaderMap::new();
        two.append(ACCEPT, HeaderValue::from_static("text/plain"));
        two.append(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&two));
    }
}
