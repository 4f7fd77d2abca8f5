//! `egress-proxy check`: the "why was X blocked?" tool.

use clap::Args;

use super::{PolicyArgs, EXIT_USAGE};
use crate::dns::Resolver;
use crate::policy::is_method_token;
use crate::report;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// One JSON object per target per line. An address in a declared public range has
    /// `"class": "public"` and `"declared": <the class it would have had>`; a denial a
    /// declaration could lift has a `"hint"`.
    #[arg(long)]
    json: bool,
    /// Decide on the domain rules only; do not resolve names.
    #[arg(long = "no-dns")]
    no_dns: bool,
    /// The method of the request a URL stands for (the http rules and `limited` mode judge
    /// it; for an `https://` URL, inside an intercepted tunnel).
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    method: String,
    /// `host` (port 443), `host:port`, `[v6]:port`, a bare IPv6 address (port 443) or a URL
    /// (`http://host/…`).
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
}

pub fn run(args: &CheckArgs) -> i32 {
    if !is_method_token(&args.method) {
        eprintln!(
            "error: --method `{}` is not an HTTP method token",
            args.method
        );
        return EXIT_USAGE;
    }
    let (config, policy) = match args.policy.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    // Judge as `serve` would: its own listeners are never a destination.
    let listeners = [config.proxy_addr, config.socks_addr, config.admin_addr];
    let policy = policy.with_self_addrs(&crate::control::reachable(&listeners));
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
        let outcome = runtime.block_on(report::check(
            &policy,
            resolver.as_ref(),
            input,
            &args.method,
        ));
        any_blocked |= !outcome.is_allowed();
        if args.json {
            println!("{}", report::json_line(&outcome));
        } else {
            print!("{}", report::text(&outcome));
        }
    }
    i32::from(any_blocked)
}
