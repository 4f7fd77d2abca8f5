//! `egress-proxy validate`: load and compile, print the effective policy and its warnings.

use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use super::PolicyArgs;
use crate::config::Config;
use crate::policy::{Action, Policy, UnixAction};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print the effective policy as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &ValidateArgs) -> i32 {
    let (config, policy) = match args.policy.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{err}");
            return 1;
        }
    };
    if args.json {
        println!("{}", json(&config, &policy));
    } else {
        print!("{}", text(&config, &policy));
    }
    0
}

fn warnings(config: &Config, policy: &Policy) -> Vec<String> {
    config
        .warnings
        .iter()
        .chain(policy.warnings())
        .cloned()
        .collect()
}

fn text(config: &Config, policy: &Policy) -> String {
    let mut out = String::new();
    let rules = policy.rules();
    let allows = rules.iter().filter(|r| r.action == Action::Allow).count();
    let _ = writeln!(
        out,
        "policy OK: {} rules ({allows} allow, {} deny), mode {}, {}",
        rules.len(),
        rules.len() - allows,
        config.mode.as_str(),
        if config.enabled {
            "enabled"
        } else {
            "NOT enabled (serve and run refuse to start)"
        },
    );
    let socks = if config.enable_socks5 {
        let udp = if config.enable_socks5_udp {
            "with UDP"
        } else {
            "TCP only"
        };
        format!("{} ({udp})", config.socks_addr)
    } else {
        "off".to_string()
    };
    let _ = writeln!(
        out,
        "listeners: http {}, socks5 {socks}, admin {}",
        config.proxy_addr, config.admin_addr
    );
    let servers = if config.dns.servers.is_empty() {
        "system resolver".to_string()
    } else {
        config
            .dns
            .servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "dns: {servers}, timeout {} ms, {}",
        config.dns.timeout.as_millis(),
        multi_answer(config)
    );
    let _ = writeln!(out, "allow_local_binding: {}", config.allow_local_binding);
    let width = rules.iter().map(|r| r.pattern.len()).max().unwrap_or(0);
    let _ = writeln!(out, "rules:");
    for rule in rules {
        let managed = if rule.managed { " (managed)" } else { "" };
        let _ = writeln!(
            out,
            "  {:<5}  {:<width$}  {}{managed}",
            rule.action.as_str(),
            rule.pattern,
            rule.origin
        );
    }
    if !config.unix_sockets.is_empty() || config.dangerously_allow_all_unix_sockets {
        let _ = writeln!(out, "unix sockets:");
        if config.dangerously_allow_all_unix_sockets {
            let _ = writeln!(
                out,
                "  allow  every path (dangerously_allow_all_unix_sockets)"
            );
        }
        for entry in &config.unix_sockets {
            let action = match entry.action {
                UnixAction::Allow => "allow",
                UnixAction::Deny => "deny",
            };
            let _ = writeln!(
                out,
                "  {action:<5}  {}  {}",
                entry.path.display(),
                entry.origin
            );
        }
    }
    for warning in warnings(config, policy) {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

fn multi_answer(config: &Config) -> &'static str {
    match config.dns.multi_answer {
        crate::config::MultiAnswer::BlockIfAnyNonPublic => "block-if-any-non-public",
        crate::config::MultiAnswer::UsePublicOnly => "use-public-only",
    }
}

#[derive(Serialize)]
struct JsonRule<'a> {
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
    dangerously_allow_non_loopback_proxy: bool,
    dangerously_allow_non_loopback_admin: bool,
    dangerously_allow_all_unix_sockets: bool,
    dns_servers: Vec<String>,
    dns_timeout_ms: u128,
    dns_multi_answer: &'static str,
    rules: Vec<JsonRule<'a>>,
    unix_sockets: Vec<JsonUnix>,
    warnings: Vec<String>,
}

/// The effective policy as JSON; the admin API's `/config` serves the same shape.
pub fn json(config: &Config, policy: &Policy) -> String {
    let doc = JsonPolicy {
        enabled: config.enabled,
        mode: config.mode.as_str(),
        proxy_url: format!("http://{}", config.proxy_addr),
        socks_url: format!("socks5://{}", config.socks_addr),
        admin_url: format!("http://{}", config.admin_addr),
        enable_socks5: config.enable_socks5,
        enable_socks5_udp: config.enable_socks5_udp,
        allow_local_binding: config.allow_local_binding,
        allow_upstream_proxy: config.allow_upstream_proxy,
        dangerously_allow_non_loopback_proxy: config.dangerously_allow_non_loopback_proxy,
        dangerously_allow_non_loopback_admin: config.dangerously_allow_non_loopback_admin,
        dangerously_allow_all_unix_sockets: config.dangerously_allow_all_unix_sockets,
        dns_servers: config.dns.servers.iter().map(ToString::to_string).collect(),
        dns_timeout_ms: config.dns.timeout.as_millis(),
        dns_multi_answer: multi_answer(config),
        rules: policy
            .rules()
            .iter()
            .map(|r| JsonRule {
                pattern: &r.pattern,
                action: r.action.as_str(),
                origin: r.origin.to_string(),
                managed: r.managed,
            })
            .collect(),
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
