//! `egress-proxy run`: one command behind the proxy.
//!
//! The listeners go on ephemeral loopback ports, the child gets the proxy environment of
//! [`env`] on top of the inherited one, its stdio is ours, the signals we receive are
//! passed on, and its exit status becomes ours. At exit, one summary of what was blocked.
//!
//! Start-up sits between the user and their command, so nothing happens before the spawn that
//! the child does not need: load and compile the policy, bind two sockets, spawn.

use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;

use super::runtime::RuntimeArgs;
use super::signals::Signals;
use super::{LogArgs, PolicyArgs, EXIT_USAGE};
use crate::audit::{FirstDenial, Protocol, Summary};
use crate::isolate::{self, Sandbox};
use crate::policy::escape_controls;
use crate::respond::{self, Audience};
use crate::server::Server;
use crate::session::SessionToken;

mod bundle;
mod env;

use bundle::Bundle;
use env::{child_env, Extras};

/// How long connections left open by the child's leftovers may run after it exits.
const GRACE: Duration = Duration::from_secs(1);

/// `egress-proxy` itself failed after the configuration was accepted (as env(1) and
/// timeout(1) report it), so it is not mistaken for the child's own status.
pub(super) const EXIT_INTERNAL: i32 = 125;
/// The command exists but cannot be executed (as a shell reports it).
const EXIT_NOT_EXECUTABLE: i32 = 126;
/// The command was not found (as a shell reports it).
const EXIT_NOT_FOUND: i32 = 127;

/// Per-request log lines would land in the middle of the child's stderr; decisions are
/// reported by the summary instead. `RUST_LOG` still overrides this.
pub(super) const DEFAULT_LOG_FILTER: &str = "warn,egress_proxy::decision=off";

#[derive(Debug, Args)]
#[command(after_help = "\
The HTTP and SOCKS5 listeners always bind ephemeral ports on 127.0.0.1: `proxy_url`, \
`socks_url`, `admin_url` and the requirements' `http_port`/`socks_port` are ignored by `run`, \
and there is no admin API. The child gets the HTTP proxy URL in HTTP_PROXY and HTTPS_PROXY \
(also lower-case, and the WS_, GRPC_, DOCKER_, YARN_, npm_config_/NPM_CONFIG_, BUNDLE_ and PIP_ \
forms), socks5h:// in ALL_PROXY and FTP_PROXY, RSYNC_PROXY, CLOUDSDK_PROXY_*, \
NODE_USE_ENV_PROXY=1, ELECTRON_GET_USE_PROXY=true and EGRESS_PROXY_ACTIVE=1; NO_PROXY and its \
forms are empty unless --no-proxy. With HTTPS inspection (`mitm`), SSL_CERT_FILE, \
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, GIT_SSL_CAINFO, PIP_CERT, \
CARGO_HTTP_CAINFO, AWS_CA_BUNDLE, DENO_CERT and npm_config_cafile name a bundle of the system roots and the local \
CA (a 0600 file in a fresh 0700 temporary directory, removed when run exits). The README's \
`run` section lists every variable.

The proxy URLs carry this run's credentials, `egress:<token>@` (a random token per run; \
RSYNC_PROXY as `egress:<token>@127.0.0.1:<port>`, CLOUDSDK_PROXY_USERNAME/_PASSWORD), and the \
listeners refuse a client without them (HTTP 407, SOCKS5 method 0xFF): other local users \
cannot use this run's proxy. --no-session-auth turns that off for a client that cannot send \
proxy credentials.

The proxy itself reads HTTPS_PROXY, \
HTTP_PROXY, ALL_PROXY and NO_PROXY from its own environment before setting the child's, and \
chains through that upstream (unless `[upstream]` names another, or --no-upstream-proxy).

A destination is reported on stderr the first time it is blocked, one line per destination \
and reason, and once more in a summary at exit; --quiet prints neither.

With --isolate (or `[run] isolate = true`; Linux only) CMD runs in a new user and network \
namespace whose only interface is lo: the proxy's listeners, created inside it, are the only \
way out, so a client that ignores the proxy variables reaches nothing. Loopback inside is the \
command's own (NO_PROXY=localhost,127.0.0.1,::1 unless --no-proxy), DNS queries there are \
refused at once (names are resolved by the proxy), and socket(AF_UNIX) fails with EPERM, so \
local daemons' sockets are reached only through the policy's `unix_sockets` and the \
x-unix-socket header: this breaks clients of the Docker, ssh-agent, D-Bus or X11 sockets \
inside (set `dangerously_allow_all_unix_sockets = true` to allow them). Set-user-id programs \
do not gain privileges inside. Not contained: the file system, and signals to processes of \
the same user outside. When a namespace cannot be created, run exits 2 and CMD never runs.

Exit status: the child's; 128+N if it was killed by signal N; 2 on a usage or configuration \
error (also when the policy is not enabled: the command is never run unconstrained); 126 if \
CMD cannot be executed; 127 if it is not found; 125 if the proxy cannot start.

Example: egress-proxy run --allow '**.github.com' -- git clone https://github.com/o/r")]
pub struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Set NO_PROXY, no_proxy, npm_config_noproxy, NPM_CONFIG_NOPROXY and BUNDLE_NO_PROXY to
    /// LIST. By default they are set to the empty string, so no client bypasses the policy.
    #[arg(long = "no-proxy", value_name = "LIST")]
    no_proxy: Option<String>,
    /// Print nothing about blocked destinations: neither the line when one is first blocked
    /// nor the summary at exit.
    #[arg(long, short)]
    quiet: bool,
    /// Run CMD in its own network namespace where the proxy is the only way out (Linux; see
    /// below). Also `[run] isolate = true`.
    #[arg(long)]
    isolate: bool,
    /// Serve any local client, without this run's proxy credentials. By default the proxy
    /// URLs carry `egress:<token>@` (a random token per run) and the listeners refuse clients
    /// without it (HTTP 407, SOCKS5 method 0xFF), so other local users cannot use this
    /// run's proxy; this is for a client that cannot send proxy credentials.
    #[arg(long = "no-session-auth")]
    no_session_auth: bool,
    /// The command to run and its arguments, best after `--`.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        value_parser = clap::value_parser!(OsString)
    )]
    command: Vec<OsString>,
}

pub fn run(args: &RunArgs) -> i32 {
    let ephemeral = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut sources = args.policy.sources();
    // As flags, so listener URLs in the files (which `run` ignores) cannot fail the load.
    sources.http_listen = Some(ephemeral);
    sources.socks_listen = Some(ephemeral);
    sources.admin_listen = Some(ephemeral);
    let (mut config, policy) =
        match super::load_enabled(&sources, "refusing to run the command without it") {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
    // Requirements ports would otherwise win over the flags; `run` never uses fixed ports,
    // and with no admin listener no real address is declared as the proxy's own.
    config.proxy_addr = ephemeral;
    config.socks_addr = ephemeral;
    config.admin_addr = ephemeral;
    let audit = match args.log.init_with(&config, DEFAULT_LOG_FILTER) {
        Ok(audit) => audit,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let runtime = match args.runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_INTERNAL;
        }
    };
    let session = match session(args) {
        Ok(session) => session,
        Err(code) => return code,
    };
    // Dropped when `run` returns, however the child ended: the bundle goes with it.
    let (mitm, bundle) = match bundle::start(&config) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let isolated = args.isolate || config.run.isolate;
    let options = isolate::Options {
        socks: config.enable_socks5,
        allow_unix_sockets: config.dangerously_allow_all_unix_sockets,
        quiet: args.quiet,
    };
    let code = runtime.block_on(async move {
        // Before the helper or the child is started, so a signal that arrives right after is
        // forwarded, not fatal to us.
        let mut signals = Signals::install();
        let mut sandbox = None;
        if isolated {
            match Sandbox::start(options, &args.command).await {
                Ok(started) => sandbox = Some(started),
                Err(err) => {
                    eprintln!("error: cannot isolate the command: {err}");
                    return EXIT_USAGE;
                }
            }
        }
        // No admin API for `run`: the child could reach it on loopback. No file watch either:
        // a child that can write the policy files must not widen its own policy mid-run.
        let mut builder = Server::builder(config)
            .policy(policy)
            .reload_from(sources)
            .session_auth(session.clone());
        if let Some(mitm) = mitm {
            builder = builder.mitm(mitm);
        }
        if let Some(sandbox) = sandbox.as_mut() {
            if let Some((http, socks)) = sandbox.take_listeners() {
                builder = builder.listeners(http, socks);
            }
            builder = builder.udp_relay(sandbox.udp_factory());
        }
        if !args.quiet {
            builder = builder.on_first_denial(Box::new(|first| print(&live_line(first))));
        }
        let server = match super::start(builder, audit, EXIT_INTERNAL).await {
            Ok(server) => server,
            Err(code) => return code,
        };
        let extras = Extras {
            no_proxy: None,
            session: session.as_ref(),
            ca_bundle: bundle.as_ref().map(Bundle::path),
        };
        let code = run_child(args, &server, &mut signals, sandbox, extras).await;
        if !args.quiet {
            print(&summary(&server.control.events().blocked_summary()));
        }
        server.shutdown(GRACE).await;
        code
    });
    // Nothing left to wait for: do not let a stray task hold up the exit.
    runtime.shutdown_background();
    code
}

/// Spawns the child with the proxy environment (in the sandbox, when there is one), forwards
/// signals until it exits, and returns the exit code to report.
async fn run_child(
    args: &RunArgs,
    server: &Server,
    signals: &mut Signals,
    sandbox: Option<Sandbox>,
    extras: Extras<'_>,
) -> i32 {
    let (program, rest) = match args.command.split_first() {
        Some(split) => split,
        None => return EXIT_USAGE,
    };
    // Inside the namespace loopback is the command's own: its servers are reached directly.
    let default_no_proxy = sandbox.as_ref().map(|_| isolate::NO_PROXY);
    let extras = Extras {
        no_proxy: args.no_proxy.as_deref().or(default_no_proxy),
        ..extras
    };
    let env = child_env(server.http_addr, server.socks_addr, extras);
    let spawned = match sandbox {
        // The helper starts the command and exits with its status.
        Some(sandbox) => sandbox.spawn(&env).await.map_err(|err| {
            eprintln!("error: lost the isolation helper: {err}");
            EXIT_INTERNAL
        }),
        None => tokio::process::Command::new(program)
            .args(rest)
            .envs(env)
            .kill_on_drop(false)
            .spawn()
            .map_err(|err| spawn_error(program, &err)),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(code) => return code,
    };
    match signals.forward_until_exit(&mut child).await {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!("error: lost track of the command: {err}");
            EXIT_INTERNAL
        }
    }
}

/// This run's proxy credentials, unless --no-session-auth.
fn session(args: &RunArgs) -> Result<Option<SessionToken>, i32> {
    if args.no_session_auth {
        return Ok(None);
    }
    SessionToken::generate().map(Some).map_err(|err| {
        eprintln!("error: {err}");
        EXIT_INTERNAL
    })
}

/// Reports why `program` could not be started; the exit code as a shell gives it.
pub(super) fn spawn_error(program: &OsStr, err: &std::io::Error) -> i32 {
    let (code, why) = match err.kind() {
        ErrorKind::NotFound => (EXIT_NOT_FOUND, "command not found".to_string()),
        ErrorKind::PermissionDenied => (EXIT_NOT_EXECUTABLE, "permission denied".into()),
        _ => (EXIT_NOT_EXECUTABLE, err.to_string()),
    };
    eprintln!("error: cannot run `{}`: {why}", program.to_string_lossy());
    code
}

/// The shell's convention: the exit code, or 128 + the signal that killed the process.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_INTERNAL,
    }
}

/// Writes `text` to stderr in one call, so it is not interleaved with the child's lines.
fn print(text: &str) {
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// How the stderr line names the listener a destination was asked through.
fn via(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http | Protocol::Unix => "HTTP",
        Protocol::Connect => "CONNECT",
        Protocol::SocksTcp => "SOCKS5",
        Protocol::SocksUdp => "SOCKS5-UDP",
    }
}

/// `egress-proxy: blocked CONNECT host:port — reason (explanation; rule; hint)`, printed while
/// the child runs, the first time a destination is blocked for a reason. The host is the
/// child's to choose, so control characters are escaped: it cannot move the cursor or forge a
/// line of its own.
fn live_line(first: &FirstDenial<'_>) -> String {
    let dest = first.dest.to_string();
    let text = format!(
        "blocked {} {}",
        via(first.protocol),
        respond::describe(&dest, first.decision, first.dns)
    );
    format!("egress-proxy: {}\n", escape_controls(&text))
}

/// One block for stderr: a header, then `  host:port  reason  rule` per distinct destination
/// and reason, sorted. Empty when nothing was blocked.
fn summary(summary: &Summary) -> String {
    let rows = &summary.blocked;
    if rows.is_empty() {
        return String::new();
    }
    // Escaped before measuring, so the columns line up as printed.
    let dests: Vec<_> = rows.iter().map(|r| escape_controls(&r.dest)).collect();
    let dest_width = dests.iter().map(|d| d.chars().count()).max().unwrap_or(0);
    let reason_width = rows.iter().map(|r| r.reason.len()).max().unwrap_or(0);
    let plural = if rows.len() == 1 { "" } else { "s" };
    let mut text = format!(
        "egress-proxy: blocked {} destination{plural}:\n",
        rows.len()
    );
    for (row, dest) in rows.iter().zip(&dests) {
        let line = match &row.rule {
            Some(rule) => format!(
                "  {dest:<dest_width$}  {:<reason_width$}  {}",
                row.reason,
                respond::rule_text(rule, Audience::Operator)
            ),
            None => format!("  {dest:<dest_width$}  {}", row.reason),
        };
        text.push_str(&escape_controls(&line));
        text.push('\n');
    }
    if summary.truncated {
        text.push_str(&format!(
            "  (more were blocked; only the first {} are listed)\n",
            crate::audit::SUMMARY
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{BlockedDest, Dest};
    use crate::policy::{Access, Action, Decision, Origin, Policy, PolicyOptions, RuleInfo};
    use crate::policy::{RuleRef, Target};

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    fn rule(pattern: &str, origin: Origin) -> Option<RuleRef> {
        Some(std::sync::Arc::new(RuleInfo {
            pattern: pattern.into(),
            action: Action::Deny,
            origin,
            managed: false,
        }))
    }

    #[test]
    fn summary_is_aligned_names_the_rule_and_is_empty_when_nothing_was_blocked() {
        assert_eq!(summary(&Summary::default()), "");
        let file = Origin::File {
            path: "/etc/p.toml".into(),
            line: 3,
            col: 1,
        };
        let blocked = Summary {
            blocked: vec![
                BlockedDest {
                    dest: "denied.test:80".into(),
                    reason: "deny-rule",
                    rule: rule("denied.test", file),
                },
                BlockedDest {
                    dest: "evil\u{1b}[2J.test:1".into(),
                    reason: "deny-rule",
                    rule: rule("*", Origin::Flag("--deny")),
                },
                BlockedDest {
                    dest: "z.test:443".into(),
                    reason: "not-allowed",
                    rule: None,
                },
            ],
            truncated: true,
        };
        assert_eq!(
            summary(&blocked),
            "egress-proxy: blocked 3 destinations:\n  \
             denied.test:80        deny-rule    rule deny `denied.test` (/etc/p.toml:3:1)\n  \
             evil\\u{1b}[2J.test:1  deny-rule    rule deny `*` (--deny)\n  \
             z.test:443            not-allowed\n  \
             (more were blocked; only the first 1024 are listed)\n"
        );
    }

    #[test]
    fn the_live_line_explains_hints_and_escapes() {
        let policy = Policy::from_rules(
            &[
                ("allowed.test", Action::Allow),
                ("denied.test", Action::Deny),
            ],
            PolicyOptions::default(),
        )
        .unwrap();
        let line = |host: &str, protocol| {
            let target = Target::parse_authority(host, Some(443)).unwrap();
            let decision = policy.decide(&target, Access::Tunnel).done().cloned();
            let decision = decision.expect("decided without DNS");
            live_line(&FirstDenial {
                protocol,
                dest: Dest::Target(&target),
                decision: &decision,
                dns: None,
            })
        };
        assert_eq!(
            line("crates.test", Protocol::Connect),
            "egress-proxy: blocked CONNECT crates.test:443 — not-allowed (no allow rule matches; add --allow crates.test:443)\n"
        );
        assert_eq!(
            line("denied.test", Protocol::SocksTcp),
            "egress-proxy: blocked SOCKS5 denied.test:443 — deny-rule (a deny rule matches (deny beats allow); rule deny `denied.test` (<api>))\n"
        );
        let invalid = live_line(&FirstDenial {
            protocol: Protocol::Http,
            dest: Dest::Raw("a\nb\u{1b}[31m"),
            decision: &Decision::invalid_host(),
            dns: None,
        });
        assert_eq!(invalid.matches('\n').count(), 1, "{invalid:?}");
        assert!(!invalid.contains('\u{1b}'), "{invalid:?}");
    }
}
