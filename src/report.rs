//! How decisions and the effective policy are shown to people and programs: the text and
//! JSON of `check` (also served by the admin API's `/check`) and the effective-policy JSON of
//! `validate --json` (also `/config`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use serde::Serialize;

use crate::config::{Chosen, Config, ResolveAt, UpstreamConfig};
use crate::dns::{DnsError, Resolver};
use crate::policy::{
    Access, ClassifiedIp, Decision, Host, InvalidHost, Policy, Reason, RuleRef, Step, Target,
    UnixAction, UrlScheme,
};

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
}

/// How far the pipeline got.
enum Judged {
    Decided(Decision),
    /// `--no-dns`: the rules allow the name; its answers were not looked at.
    Unresolved(Option<RuleRef>),
}

/// Judges one `check` target: `host`, `host:port` (port 443), `[v6]:port`, a bare IPv6
/// address (port 443) or a URL. A URL is parsed by the function the HTTP listener uses, so
/// `check` refuses exactly the URLs the listener refuses. With a resolver, an allowed name is
/// resolved and every answer classified, as the listeners do.
pub async fn check(policy: &Policy, resolver: Option<&Resolver>, input: &str) -> Outcome {
    let parsed = if input.contains("://") {
        // A plain-HTTP URL is what a forward-proxy GET carries; the others travel as a tunnel.
        Target::parse_url(input).map(|(scheme, target)| {
            let access = match scheme {
                UrlScheme::Http => Access::Http {
                    method: "GET",
                    path: "/",
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
            }
        }
    };
    // The listeners' pipeline, step by step only so `--no-dns` can stop before the lookup.
    let step = policy.decide(&target, access);
    let resolved = step.done().is_none() && resolver.is_some();
    let (verdict, dns_error) = match (step, resolver) {
        (Step::Resolve(pending), None) => (Judged::Unresolved(pending.rule().cloned()), None),
        (step, Some(resolver)) => match step.resolve(resolver).await {
            Ok(allowed) => (Judged::Decided(allowed.decision().clone()), None),
            Err(blocked) => (Judged::Decided(blocked.decision), blocked.dns),
        },
        (Step::Done(decision), None) => (Judged::Decided(decision), None),
    };
    let target = target.into_owned();
    Outcome {
        input: input.to_string(),
        target: Some(target),
        verdict,
        dns_error,
        invalid: None,
        resolved,
        hidden: 0,
    }
}

impl Outcome {
    /// Whether the target would be let through.
    pub fn is_allowed(&self) -> bool {
        match &self.verdict {
            Judged::Decided(decision) => decision.is_allowed(),
            Judged::Unresolved(_) => true,
        }
    }

    fn reason(&self) -> Reason {
        match &self.verdict {
            Judged::Decided(decision) => decision.reason(),
            Judged::Unresolved(_) => Reason::Allowed,
        }
    }

    fn rule(&self) -> Option<&RuleRef> {
        match &self.verdict {
            Judged::Decided(decision) => decision.rule(),
            Judged::Unresolved(rule) => rule.as_ref(),
        }
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
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One JSON object: `{target, verdict, reason, rule, host, port, ips: [{ip, class}]}` (an
/// address in a declared public range adds `declared: <its table class>`), plus
/// `ips_hidden: N` when [`Outcome::hide_non_public`] left answers out and `hint` for a denial a
/// declared public range could lift.
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
    };
    serde_json::to_string(&line).expect("plain data serialises")
}

#[derive(Serialize)]
pub(crate) struct JsonRule<'a> {
    pattern: &'a str,
    action: &'static str,
    origin: String,
    managed: bool,
}

#[derive(Serialize)]
struct JsonUnix {
    path: String,
    action: UnixAction,
    origin: String,
}

#[derive(Serialize)]
struct JsonPolicy<'a> {
    enabled: bool,
    mode: &'static str,
    proxy_url: String,
    socks_url: String,
    admin_url: String,
    enable_socks5: bool,
    enable_socks5_udp: bool,
    allow_local_binding: bool,
    allow_upstream_proxy: bool,
    /// As written (an IPv6 spelling of IPv4 addresses is not rewritten).
    public_ranges: Vec<String>,
    dangerously_allow_non_loopback_proxy: bool,
    dangerously_allow_non_loopback_admin: bool,
    dangerously_allow_all_unix_sockets: bool,
    dns_servers: Vec<String>,
    dns_timeout_ms: u128,
    dns_multi_answer: &'static str,
    upstream: JsonUpstream,
    run: JsonRun,
    rules: Vec<JsonRule<'a>>,
    unix_sockets: Vec<JsonUnix>,
    warnings: Vec<String>,
}

/// `[run]`: what `run` does with the command.
#[derive(Serialize)]
struct JsonRun {
    isolate: bool,
}

#[derive(Serialize)]
struct JsonChosen {
    /// Without the password.
    url: String,
    from: String,
}

#[derive(Serialize)]
struct JsonUpstream {
    tunnel: Option<JsonChosen>,
    forward: Option<JsonChosen>,
    no_proxy: Vec<String>,
    resolve: &'static str,
    ca_file: Option<String>,
    off: Option<String>,
}

fn upstream_json(u: &UpstreamConfig) -> JsonUpstream {
    let chosen = |c: &Option<Chosen>| {
        c.as_ref().map(|c| JsonChosen {
            url: c.url.to_string(),
            from: c.from.clone(),
        })
    };
    JsonUpstream {
        tunnel: chosen(&u.tunnel),
        forward: chosen(&u.forward),
        no_proxy: u.no_proxy.entries().to_vec(),
        resolve: u.resolve.as_str(),
        ca_file: u.ca_file.as_ref().map(|p| p.display().to_string()),
        off: u.off.clone(),
    }
}

/// What `validate` says about the upstream: which applies to what, and where names are
/// resolved. Never a password.
pub fn upstream_lines(u: &UpstreamConfig) -> Vec<String> {
    if !u.is_active() {
        let why = u.off.as_ref().map_or_else(
            || "none (no `[upstream] url`, HTTPS_PROXY, HTTP_PROXY or ALL_PROXY)".to_string(),
            |off| format!("off ({off})"),
        );
        return vec![format!("upstream: {why}; every connection is direct")];
    }
    let via = |c: &Option<Chosen>| {
        c.as_ref().map_or("direct".to_string(), |c| {
            format!("via {} ({})", c.url, c.from)
        })
    };
    let mut lines = vec![
        format!("upstream: tunnels (CONNECT, SOCKS5 CONNECT) {}", via(&u.tunnel)),
        format!("upstream: plain HTTP {}", via(&u.forward)),
        match u.resolve {
            ResolveAt::Local => "upstream: names are resolved and checked here, then sent to the upstream by name (resolve = \"local\")".to_string(),
            ResolveAt::Upstream => "upstream: names are resolved by the upstream, not here; IP addresses are still checked here (resolve = \"upstream\")".to_string(),
        },
    ];
    let exceptions = if u.no_proxy.is_all() {
        "every destination (no_proxy = *)".to_string()
    } else {
        let mut list = vec!["localhost and loopback addresses".to_string()];
        list.extend(u.no_proxy.entries().iter().cloned());
        list.join(", ")
    };
    lines.push(format!(
        "upstream: direct for {exceptions}; SOCKS5 UDP is never chained"
    ));
    lines
}

/// The effective policy as JSON; the admin API's `/config` serves the same shape.
/// The compiled rules as `validate --json`, `/config` and `/patterns` list them.
pub(crate) fn rules_json(policy: &Policy) -> Vec<JsonRule<'_>> {
    policy
        .rules()
        .iter()
        .map(|r| JsonRule {
            pattern: &r.pattern,
            action: r.action.as_str(),
            origin: r.origin.to_string(),
            managed: r.managed,
        })
        .collect()
}

/// The effective policy as `validate --json` prints it and `/config` serves it.
pub fn effective_json(config: &Config, policy: &Policy) -> String {
    let doc = JsonPolicy {
        enabled: config.enabled,
        // The running mode: `POST /mode` changes the policy, not the files.
        mode: policy.options().mode.as_str(),
        proxy_url: format!("http://{}", config.proxy_addr),
        socks_url: format!("socks5://{}", config.socks_addr),
        admin_url: format!("http://{}", config.admin_addr),
        enable_socks5: config.enable_socks5,
        enable_socks5_udp: config.enable_socks5_udp,
        allow_local_binding: config.allow_local_binding,
        allow_upstream_proxy: config.allow_upstream_proxy,
        public_ranges: config
            .public_ranges
            .declared()
            .iter()
            .map(|r| r.written().to_string())
            .collect(),
        dangerously_allow_non_loopback_proxy: config.dangerously_allow_non_loopback_proxy,
        dangerously_allow_non_loopback_admin: config.dangerously_allow_non_loopback_admin,
        dangerously_allow_all_unix_sockets: config.dangerously_allow_all_unix_sockets,
        dns_servers: config.dns.servers.iter().map(ToString::to_string).collect(),
        dns_timeout_ms: config.dns.timeout.as_millis(),
        dns_multi_answer: config.dns.multi_answer.as_str(),
        upstream: upstream_json(&config.upstream),
        run: JsonRun {
            isolate: config.run.isolate,
        },
        rules: rules_json(policy),
        unix_sockets: config
            .unix_sockets
            .iter()
            .map(|u| JsonUnix {
                path: u.path.display().to_string(),
                action: u.action,
                origin: u.origin.to_string(),
            })
            .collect(),
        warnings: warnings(config, policy),
    };
    serde_json::to_string(&doc).expect("plain data serialises")
}

/// Every warning about the effective policy: the configuration's, the compiled rules', and
/// an admin token file others can read.
pub fn warnings(config: &Config, policy: &Policy) -> Vec<String> {
    let token = config
        .admin
        .token_file
        .as_deref()
        .and_then(crate::token::exposure_warning);
    config
        .warnings
        .iter()
        .chain(policy.warnings())
        .chain(policy.http_warnings())
        .cloned()
        .chain(token)
        .collect()
}
