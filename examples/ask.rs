//! An interactive decider: the proxy asks on this terminal about every destination no rule
//! matched, the way sandbox-runtime's ask callback or Codex's `NetworkPolicyDecider` do.
//!
//! ```text
//! cargo run --example ask -- [POLICY.toml]
//! curl -x http://127.0.0.1:3128 https://example.com/     # in another terminal
//! ```
//!
//! Deny rules, local addresses and DNS checks still apply whatever you answer; an answer is
//! kept for a minute per destination, and no answer within 30 seconds denies.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egress_proxy::config::{self, Sources};
use egress_proxy::decider::{DeciderOptions, Question};
use egress_proxy::server::Server;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sources = Sources {
        configs: std::env::args_os().skip(1).map(PathBuf::from).collect(),
        ..Sources::default()
    };
    let config = config::load(&sources)?;
    // One question on the terminal at a time.
    let terminal = Arc::new(Mutex::new(()));
    let decider = move |q: Question| {
        let terminal = Arc::clone(&terminal);
        async move {
            let _turn = terminal.lock().await;
            let prompt = format!(
                "{} from {}: allow {}:{}? [y/N] ",
                q.protocol, q.client, q.host, q.port
            );
            tokio::task::spawn_blocking(move || ask(&prompt))
                .await
                .unwrap_or(false)
        }
    };
    let options = DeciderOptions {
        cache_for: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    };
    let server = Server::builder(config)
        .decider(Arc::new(decider), options)
        .start()
        .await?;
    println!("HTTP proxy on http://{}", server.http_addr);
    if let Some(socks) = server.socks_addr {
        println!("SOCKS5 proxy on socks5h://{socks}");
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Prints `prompt` and reads one answer from the terminal: only `y` or `yes` allows.
fn ask(prompt: &str) -> bool {
    let mut out = std::io::stdout();
    if write!(out, "{prompt}").and_then(|()| out.flush()).is_err() {
        return false;
    }
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(_) => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        Err(_) => false,
    }
}
