//! The one table that turns a failure at the HTTP edge into a response: status,
//! `x-proxy-error`, `x-proxy-reason` and a one-line body a person can act on.

use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::Body;
use crate::net::dial::DialError;
use crate::net::Denied;
use crate::policy::Reason;

/// Everything the HTTP listener can fail with before bytes flow.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The policy (or DNS) said no. `dest` is what the client asked for, as canonicalised.
    Denied { dest: &'a str, denied: &'a Denied },
    /// The destination was allowed but could not be reached.
    Dial { dest: &'a str, error: &'a DialError },
    /// The request itself is unusable (malformed target, wrong form, bad header).
    BadRequest(&'static str),
    /// The upstream answered `101 Switching Protocols` to a request that asked for no upgrade.
    UnrequestedUpgrade { dest: &'a str },
    /// The upstream broke the exchange after we connected.
    Upstream {
        dest: &'a str,
        error: &'a hyper::Error,
    },
}

pub fn response(failure: &Failure<'_>) -> Response<Body> {
    let mut body = String::from("egress-proxy: ");
    let (status, error, reason) = match failure {
        Failure::Denied { dest, denied } => {
            let d = &denied.decision;
            let status = match d.reason {
                Reason::InvalidHost => StatusCode::BAD_REQUEST,
                Reason::DnsFailed => StatusCode::BAD_GATEWAY,
                _ => StatusCode::FORBIDDEN,
            };
            let _ = write!(
                body,
                "blocked {dest}: {} ({})",
                d.reason,
                d.reason.explain()
            );
            if let Some(dns) = &denied.dns {
                let _ = write!(body, "; dns: {dns}");
            }
            match &d.rule {
                Some(rule) => {
                    let _ = write!(
                        body,
                        "; rule {} `{}` ({})",
                        rule.action.as_str(),
                        rule.pattern,
                        rule.origin
                    );
                }
                None => body.push_str("; rule: none"),
            }
            (status, d.reason.category(), Some(d.reason.code()))
        }
        Failure::Dial { dest, error } => {
            let (status, code) = match error {
                DialError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "connect-timeout"),
                DialError::Refused(_) => (StatusCode::BAD_GATEWAY, "connect-refused"),
                DialError::Unreachable { .. } | DialError::NoAddress => {
                    (StatusCode::BAD_GATEWAY, "connect-failed")
                }
            };
            let _ = write!(body, "cannot connect to {dest}: {error}");
            (status, code, None)
        }
        Failure::BadRequest(why) => {
            body.push_str(why);
            (StatusCode::BAD_REQUEST, "bad-request", None)
        }
        Failure::UnrequestedUpgrade { dest } => {
            let _ = write!(
                body,
                "upstream {dest} answered 101 Switching Protocols to a request without Upgrade (the proxy does not forward Upgrade)"
            );
            (StatusCode::BAD_GATEWAY, "upstream-failed", None)
        }
        Failure::Upstream { dest, error } => {
            let _ = write!(body, "upstream {dest} failed: {error}");
            (StatusCode::BAD_GATEWAY, "upstream-failed", None)
        }
    };
    body.push('\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-proxy-error", HeaderValue::from_static(error));
    if let Some(reason) = reason {
        headers.insert("x-proxy-reason", HeaderValue::from_static(reason));
    }
    response
}

/// The raw answer for a connection that arrives when every slot is taken: written before
/// hyper sees the socket, so a flood cannot queue work behind it.
pub const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nx-proxy-error: busy\r\ncontent-type: text/plain\r\ncontent-length: 46\r\nconnection: close\r\n\r\negress-proxy: too many connections, try again\n";

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dial::Peer;
    use crate::policy::{Access, Action, Origin, Policy, PolicyOptions, RuleSpec, Target};
    use std::time::Duration;

    fn denied(reason_target: &str) -> Denied {
        let policy = Policy::new(
            &[RuleSpec {
                pattern: "evil.test".into(),
                action: Action::Deny,
                origin: Origin::Flag("--deny"),
                managed: false,
            }],
            &[],
            PolicyOptions::default(),
        )
        .unwrap();
        let target = Target::parse_authority(reason_target, None).unwrap();
        Denied {
            decision: policy.decide(&target, Access::Tunnel),
            dns: None,
        }
    }

    fn head(r: &Response<Body>) -> (u16, String, String) {
        let h = |n: &str| {
            r.headers()
                .get(n)
                .map_or(String::new(), |v| v.to_str().unwrap().to_string())
        };
        (r.status().as_u16(), h("x-proxy-error"), h("x-proxy-reason"))
    }

    #[test]
    fn the_status_table() {
        let deny = denied("evil.test:443");
        let r = response(&Failure::Denied {
            dest: "evil.test:443",
            denied: &deny,
        });
        assert_eq!(
            head(&r),
            (403, "blocked-by-denylist".into(), "deny-rule".into())
        );
        let unlisted = denied("other.test:443");
        let r = response(&Failure::Denied {
            dest: "other.test:443",
            denied: &unlisted,
        });
        assert_eq!(
            head(&r),
            (403, "blocked-by-allowlist".into(), "not-allowed".into())
        );
        let invalid = Denied {
            decision: crate::policy::Decision::invalid_host(),
            dns: None,
        };
        let r = response(&Failure::Denied {
            dest: "x",
            denied: &invalid,
        });
        assert_eq!(
            head(&r),
            (400, "blocked-by-policy".into(), "invalid-host".into())
        );
        let timeout = DialError::Timeout(Duration::from_secs(1));
        let r = response(&Failure::Dial {
            dest: "a:1",
            error: &timeout,
        });
        assert_eq!(head(&r), (504, "connect-timeout".into(), String::new()));
        let refused = DialError::Refused(Peer::Tcp("127.0.0.1:1".parse().unwrap()));
        let r = response(&Failure::Dial {
            dest: "a:1",
            error: &refused,
        });
        assert_eq!(head(&r), (502, "connect-refused".into(), String::new()));
        let r = response(&Failure::UnrequestedUpgrade { dest: "a:1" });
        assert_eq!(head(&r), (502, "upstream-failed".into(), String::new()));
        let r = response(&Failure::BadRequest("nope"));
        assert_eq!(head(&r), (400, "bad-request".into(), String::new()));
    }

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
    }
}
