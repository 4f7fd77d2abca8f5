//! `egress-proxy validate`: load and compile, print the effective policy and its warnings.

use std::fmt::Write as _;

use clap::Args;

use super::PolicyArgs;
use crate::config::Config;
use crate::policy::{Action, Policy};
use crate::report;

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
        println!("{}", report::effective_json(&config, &policy));
    } else {
        print!("{}", text(&config, &policy));
    }
    0
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
        config.dns.multi_answer.as_str()
    );
    let _ = writeln!(out, "allow_local_binding: {}", config.allow_local_binding);
    let declared = config.public_ranges.declared();
    if !declared.is_empty() {
        let ranges: Vec<String> = declared.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "public ranges (declared): {}", ranges.join(", "));
    }
    if config.run.isolate {
        let _ = writeln!(
            out,
            "run: isolate (the command gets its own network namespace)"
        );
    }
    for line in report::upstream_lines(&config.upstream) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(line) = report::mitm_line(config) {
        let _ = writeln!(out, "{line}");
    }
    lists(&mut out, config, policy);
    for warning in report::warnings(config, policy) {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// The domain rules, the Unix-socket entries and the http rules, each with its origin.
fn lists(out: &mut String, config: &Config, policy: &Policy) {
    let rules = policy.rules();
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
            let action = entry.action.as_str();
            let _ = writeln!(
                out,
                "  {action:<5}  {}  {}",
                entry.path.display(),
                entry.origin
            );
        }
    }
    let http_rules = report::http_rule_lines(policy);
    if !http_rules.is_empty() {
        let _ = writeln!(out, "http rules:");
        for line in http_rules {
            let _ = writeln!(out, "{line}");
        }
    }
}
