//! `egress-proxy check`: the "why was X blocked?" tool.

use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use super::{PolicyArgs, EXIT_USAGE};
use crate::dns::{DnsError, Resolver};
use crate::policy::{Access, Decision, Host, InvalidHost, Policy, Target};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// One JSON object per target per line.
    #[arg(long)]
    json: bool,
    /// Decide on the domain rules only; do not resolve names.
    #[arg(long = "no-dns")]
    no_dns: bool,
    /// `host` (port 443), `host:port`, `[v6]:port` or a URL (`http://host/…`).
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
}

/// One target's outcome, everything `check` prints.
struct Outcome {
    input: String,
    target: Option<Target<'static>>,
    decision: Decision,
    dns_error: Option<DnsError>,
    invalid: Option<InvalidHost>,
    resolved: bool,
}

pub fn run(args: &CheckArgs) -> i32 {
    let (config, policy) = match args.policy.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    // Judge as `serve` would: its own listeners are never a destination.
    let policy = policy.with_self_addrs(&[config.proxy_addr, config.socks_addr, config.admin_addr]);
    let resolver = if args.no_dns {
        None
    } else {
        match Resolver::new(&config.dns) {
            Ok(resolver) => Some(resolver),
            Err(err) => {
                eprintln!("error: cannot set up DNS: {err}");
                return EXIT_USAGE;
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return EXIT_USAGE;
        }
    };
    let mut any_blocked = false;
    for input in &args.targets {
        let outcome = runtime.block_on(evaluate(&policy, resolver.as_ref(), input));
        any_blocked |= !outcome.decision.is_allowed();
        if args.json {
            println!("{}", json_line(&outcome));
        } else {
            print!("{}", text(&outcome));
        }
    }
    i32::from(any_blocked)
}

async fn evaluate(policy: &Policy, resolver: Option<&Resolver>, input: &str) -> Outcome {
    let parsed = if input.contains("://") {
        Target::parse_url(input)
    } else {
        Target::parse_authority(input, Some(443)).map(Target::into_owned)
    };
    let target = match parsed {
        Ok(target) => target,
        Err(invalid) => {
            return Outcome {
                input: input.to_string(),
                target: None,
                decision: Decision::invalid_host(),
                dns_error: None,
                invalid: Some(invalid),
                resolved: false,
            }
        }
    };
    // A URL with a plain-HTTP scheme is what a forward-proxy GET would carry; anything else
    // travels as a tunnel (CONNECT or SOCKS5).
    let access = if input.starts_with("http://") || input.starts_with("ws://") {
        Access::Http { method: "GET" }
    } else {
        Access::Tunnel
    };
    let mut decision = policy.decide(&target, access);
    let mut dns_error = None;
    let mut resolved = false;
    if let (true, Some(resolver), Host::Name(name)) = (decision.needs_dns(), resolver, &target.host)
    {
        resolved = true;
        decision = match resolver.lookup(name).await {
            Ok(ips) => policy.check_resolved(decision, target.port, &ips),
            Err(err) => {
                dns_error = Some(err);
                policy.dns_failed(decision)
            }
        };
    }
    Outcome {
        input: input.to_string(),
        target: Some(target),
        decision,
        dns_error,
        invalid: None,
        resolved,
    }
}

fn text(o: &Outcome) -> String {
    let d = &o.decision;
    let mut out = String::new();
    let shown = o
        .target
        .as_ref()
        .map_or(o.input.clone(), ToString::to_string);
    let verdict = if d.is_allowed() { "ALLOW" } else { "BLOCK" };
    let _ = writeln!(out, "{verdict} {shown}");
    let _ = writeln!(out, "  reason  {}: {}", d.reason, d.reason.explain());
    match &d.rule {
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
    for ip in &d.ips {
        let _ = writeln!(out, "  ip      {} ({})", ip.ip, ip.class);
    }
    if d.needs_dns() && !o.resolved {
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
}

fn json_line(o: &Outcome) -> String {
    let d = &o.decision;
    let line = JsonOutcome {
        target: &o.input,
        verdict: d.verdict.as_str(),
        reason: d.reason.code(),
        rule: d.rule.as_ref().map(|r| &*r.pattern),
        host: o.target.as_ref().map(|t| match &t.host {
            Host::Name(name) => name.to_string(),
            Host::Ip(ip) => ip.to_string(),
        }),
        port: o.target.as_ref().map(|t| t.port),
        ips: d
            .ips
            .iter()
            .map(|c| JsonIp {
                ip: c.ip.to_string(),
                class: c.class.name(),
            })
            .collect(),
    };
    serde_json::to_string(&line).expect("plain data serialises")
}
