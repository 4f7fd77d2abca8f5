//! How decisions and the effective policy are shown to people and programs: the text and
//! JSON of `check` (also served by the admin API's `/check`) and the effective-policy JSON of
//! `validate --json` (also `/config`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use serde::Serialize;

use crate::dns::{DnsError, Resolver};
use crate::policy::{
    Access, ClassifiedIp, Decision, Host, InvalidHost, Policy, Reason, RuleRef, Step, Target,
    Unresolved, UrlScheme,
};

mod effective;

pub(crate) use effective::rules_json;
pub use effective::{effective_json, http_rule_lines, mitm_line, upstream_lines, warnings};

/// One target's outcome, everything `check` prints.
pub struct Outcome {
    input: String,
    target: Option<Target<'static>>,
    verdict: Judged,
    dns_error: Option<DnsError>,
    invalid: Option<InvalidHost>,
    resolved: bool,
    /// Non-public answers left out by [`Outcome::hide_non_public`].
    hidden: usize,
    /// For a URL, the request judged.
    request: Option<Request>,
}

/// The request a URL stands for, and what the request-level checks said inside TLS.
struct Request {
    method: String,
    path: String,
    /// For an `https://` URL: whether the tunnel is intercepted.
    tunnel: Option<bool>,
    /// For an intercepted tunnel, the request-level refusal (`None` lets the request go);
    /// a plain-HTTP request's is its decision.
    refused: Option<Decision>,
    /// Whether the text shows it: when the method is not GET, or http rules or interception
    /// could judge it (otherwise the lines would say nothing).
    shown: bool,
}

/// How far the pipeline got.
enum Judged {
    Decided(Decision),
    /// `--no-dns`: the rules allow the name; its answers were not looked at.
    Unresolved(Unresolved),
}

impl Judged {
    fn decision(&self) -> &Decision {
        match self {
            Judged::Decided(decision) => decision,
            Judged::Unresolved(unresolved) => unresolved.decision(),
        }
    }
}

/// Judges one `check` target: `host`, `host:port` (port 443), `[v6]:port`, a bare IPv6
/// address (port 443) or a URL. A URL is parsed by the function the HTTP listener uses, so
/// `check` refuses exactly the URLs the listener refuses. With a resolver, an allowed name is
/// resolved and every answer classified, as the listeners do.
/// A URL is judged as a `method` request for its path (without a body): a plain-HTTP one
/// through the forward path's checks, an `https://` one as its tunnel, then, when that is
/// intercepted, by the request-level checks the interception engine runs.
pub async fn check(
    policy: &Policy,
    resolver: Option<&Resolver>,
    input: &str,
    method: &str,
) -> Outcome {
    let path = url_path(input);
    let parsed = if input.contains("://") {
        // A plain-HTTP URL is what a forward-proxy request carries; the others travel as a
        // tunnel.
        Target::parse_url(input).map(|(scheme, target)| {
            let access = match scheme {
                UrlScheme::Http => Access::Http {
                    method,
                    path,
                    body: false,
                },
                UrlScheme::Tunnel => Access::Tunnel,
            };
            (target.into_owned(), access)
        })
    } else if let Ok(ip) = input.parse::<Ipv6Addr>() {
        // A string that is an IPv6 address whole is that address, not a host and a port.
        Ok((Target::new(Host::Ip(IpAddr::V6(ip)), 443), Access::Tunnel))
    } else {
        Target::parse_authority(input, Some(443))
            .map(|target| (target.into_owned(), Access::Tunnel))
    };
    let (target, access) = match parsed {
        Ok(parsed) => parsed,
        Err(invalid) => {
            return Outcome {
                input: input.to_string(),
                target: None,
                verdict: Judged::Decided(Decision::invalid_host()),
                dns_error: None,
                invalid: Some(invalid),
                resolved: false,
                hidden: 0,
                request: None,
            }
        }
    };
    // The listeners' pipeline, step by step only so `--no-dns` can stop before the lookup.
    let step = policy.decide(&target, access);
    let resolved = step.done().is_none() && resolver.is_some();
    let (verdict, dns_error) = match (step, resolver) {
        (Step::Resolve(pending), None) => (Judged::Unresolved(pending.unresolved()), None),
        (step, Some(resolver)) => match step.resolve(resolver).await {
            Ok(allowed) => (Judged::Decided(allowed.decision().clone()), None),
            Err(blocked) => (Judged::Decided(blocked.decision), blocked.dns),
        },
        (Step::Done(decision), None) => (Judged::Decided(decision), None),
    };
    let request = input.contains("://").then(|| {
        let tunnel = (access == Access::Tunnel).then(|| verdict.decision().intercept());
        let refused = match tunnel {
            Some(true) => policy.check_request(&target, method, path, false),
            _ => None,
        };
        Request {
            method: method.to_string(),
            path: path.to_string(),
            tunnel,
            refused,
            shown: method != "GET"
                || !policy.http_rules().is_empty()
                || policy.interceptable(&target),
        }
    });
    Outcome {
        input: input.to_string(),
        target: Some(target),
        verdict,
        dns_error,
        invalid: None,
        resolved,
        hidden: 0,
        request,
    }
}

/// The path of a URL as a request line carries it: from the first `/` after the authority
/// to the query (`/` when there is none).
fn url_path(input: &str) -> &str {
    let Some((_, rest)) = input.split_once("://") else {
        return "/";
    };
    let Some(start) = rest.find(['/', '?', '#']) else {
        return "/";
    };
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    match &path[..end] {
        "" => "/",
        path => path,
    }
}

impl Outcome {
    /// Whether the target would be let through: its destination, and for an intercepted
    /// `https://` URL its request too.
    pub fn is_allowed(&self) -> bool {
        self.verdict.decision().is_allowed() && self.refused().is_none()
    }

    /// The request-level refusal inside an intercepted tunnel.
    fn refused(&self) -> Option<&Decision> {
        self.request.as_ref()?.refused.as_ref()
    }

    /// What decided: the request-level refusal, else the destination's decision.
    fn shown(&self) -> &Decision {
        self.refused().unwrap_or(self.verdict.decision())
    }

    fn reason(&self) -> Reason {
        self.shown().reason()
    }

    fn rule(&self) -> Option<&RuleRef> {
        self.shown().rule()
    }

    /// How a denial a declared public range could lift would be lifted.
    fn hint(&self) -> Option<String> {
        match &self.verdict {
            Judged::Decided(decision) => crate::respond::public_range_hint(decision),
            Judged::Unresolved(_) => None,
        }
    }

    fn ips(&self) -> &[ClassifiedIp] {
        match &self.verdict {
            Judged::Decided(decision) => decision.ips(),
            Judged::Unresolved(_) => &[],
        }
    }

    /// Leaves out every resolved answer that is not public, counting them: the admin API's
    /// `/check` answers the sandboxed child too, and must not become its window into private
    /// DNS. An IP-literal target keeps its address: the asker wrote it.
    pub fn hide_non_public(&mut self) {
        if !self.resolved {
            return;
        }
        if let Judged::Decided(decision) = &mut self.verdict {
            let before = decision.ips().len();
            decision.retain_ips(|ip| ip.class.is_public());
            self.hidden += before - decision.ips().len();
        }
    }
}

/// The human-readable block for one target.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let shown = o
        .target
        .as_ref()
        .map_or(o.input.clone(), ToString::to_string);
    let verdict = if o.is_allowed() { "ALLOW" } else { "BLOCK" };
    let reason = o.reason();
    let _ = writeln!(out, "{verdict} {shown}");
    let _ = writeln!(out, "  reason  {reason}: {}", reason.explain());
    match o.rule() {
        Some(rule) => {
            let managed = if rule.managed { ", managed" } else { "" };
            let _ = writeln!(
                out,
                "  rule    {} {}{managed} ({})",
                rule.action.as_str(),
                rule.pattern,
                rule.origin
            );
        }
        None => {
            let _ = writeln!(out, "  rule    none");
        }
    }
    if let Some(target) = &o.target {
        let _ = writeln!(out, "  host    {}  port {}", target.host, target.port);
        if let Some(request) = o.request.as_ref().filter(|r| r.shown) {
            request_lines(&mut out, request);
        }
    } else {
        let _ = writeln!(out, "  input   {:?}", o.input);
    }
    if let Some(invalid) = &o.invalid {
        let _ = writeln!(out, "  detail  {invalid}");
    }
    if let Some(err) = &o.dns_error {
        let _ = writeln!(out, "  dns     {err}");
    }
    for ip in o.ips() {
        match ip.declared {
            Some(was) => {
                let _ = writeln!(
                    out,
                    "  ip      {} ({} (declared; was {was}))",
                    ip.ip, ip.class
                );
            }
            None => {
                let _ = writeln!(out, "  ip      {} ({})", ip.ip, ip.class);
            }
        }
    }
    if let Some(hint) = o.hint() {
        let _ = writeln!(out, "  hint    {hint}");
    }
    if let Judged::Unresolved(_) = o.verdict {
        let _ = writeln!(
            out,
            "  dns     not resolved (--no-dns): every answer must still be public (or local with allow_local_binding)"
        );
    }
    out
}

/// `request METHOD PATH`, and for an allowed tunnel whether it is intercepted.
fn request_lines(out: &mut String, request: &Request) {
    let _ = writeln!(out, "  request {} {}", request.method, request.path);
    let inspect = match (request.tunnel, &request.refused) {
        (Some(true), None) => {
            "intercepted: the request meets the http rules and the mode inside TLS, and may go"
        }
        (Some(true), Some(_)) => {
            "intercepted: the tunnel is allowed, the request inside TLS is refused"
        }
        (Some(false), _) => {
            "not intercepted: an opaque tunnel, whose requests the http rules never see"
        }
        (None, _) => return,
    };
    let _ = writeln!(out, "  inspect {inspect}");
}

#[derive(Serialize)]
struct JsonIp {
    ip: String,
    class: &'static str,
    /// The class a declared public range overrode (`class` is then `public`).
    #[serde(skip_serializing_if = "Option::is_none")]
    declared: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonOutcome<'a> {
    target: &'a str,
    verdict: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    host: Option<String>,
    port: Option<u16>,
    ips: Vec<JsonIp>,
    #[serde(skip_serializing_if = "is_zero")]
    ips_hidden: usize,
    /// For a denial a declared public range could lift, how.
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    /// For a URL, the request judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    /// For a URL: whether its tunnel is intercepted (always false for plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    intercept: Option<bool>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One JSON object: `{target, verdict, reason, rule, host, port, ips: [{ip, class}]}` (an
/// address in a declared public range adds `declared: <its table class>`), plus
/// `ips_hidden: N` when [`Outcome::hide_non_public`] left answers out, `hint` for a denial a
/// declared public range could lift, and `method`, `path` and `intercept` for a URL.
pub fn json_line(o: &Outcome) -> String {
    let line = JsonOutcome {
        target: &o.input,
        verdict: if o.is_allowed() { "allow" } else { "block" },
        reason: o.reason().code(),
        rule: o.rule().map(|r| &*r.pattern),
        host: o.target.as_ref().map(|t| t.host.plain()),
        port: o.target.as_ref().map(|t| t.port),
        ips: o
            .ips()
            .iter()
            .map(|c| JsonIp {
                ip: c.ip.to_string(),
                class: c.class.name(),
                declared: c.declared.map(|was| was.name()),
            })
            .collect(),
        ips_hidden: o.hidden,
        hint: o.hint(),
        method: o.request.as_ref().map(|r| r.method.as_str()),
        path: o.request.as_ref().map(|r| r.path.as_str()),
        intercept: o.request.as_ref().map(|r| r.tunnel == Some(true)),
    };
    serde_json::to_string(&line).expect("plain data serialises")
}
