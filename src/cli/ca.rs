//! `egress-proxy ca path|show|rotate`: where the CA of HTTPS inspection is, what it is, and a
//! new one. The configuration is loaded as `validate` loads it, so a `[mitm] ca_cert` given
//! there is the one shown.

use std::fmt::Write as _;

use clap::{Args, Subcommand};

use super::{PolicyArgs, EXIT_USAGE};
use crate::mitm::{show_time, Ca, CaPaths};

#[derive(Debug, Args)]
#[command(after_help = "\
The CA is `[mitm] ca_cert` and `ca_key` when they are set, else the one generated on first \
use under $XDG_DATA_HOME/egress-proxy (~/.local/share/egress-proxy without XDG_DATA_HOME): \
ca.pem and ca.key, mode 0600 in a 0700 directory. Whoever holds the key can impersonate any \
site to a client that trusts the CA: `run` gives only its child a bundle with it.

Exit status: 0; 2 on a configuration error or a CA that cannot be used.")]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print the certificate's path, then the key's (nothing is read or generated).
    Path(PolicyOnly),
    /// Print the CA's subject, SHA-256 fingerprint, validity and where it comes from,
    /// generating it on first use.
    Show(ShowArgs),
    /// Replace the generated CA with a new one (refused when `[mitm] ca_cert` is set).
    Rotate(PolicyOnly),
}

#[derive(Debug, Args)]
struct PolicyOnly {
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print the certificate (PEM) instead, e.g. to add it to a trust store.
    #[arg(long)]
    pem: bool,
}

pub fn run(args: &CaArgs) -> i32 {
    match done(&args.command) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_USAGE
        }
    }
}

/// What to print, or the one line of the error.
fn done(command: &CaCommand) -> Result<String, String> {
    let policy = match command {
        CaCommand::Path(args) | CaCommand::Rotate(args) => &args.policy,
        CaCommand::Show(args) => &args.policy,
    };
    let (config, _) = policy.load().map_err(|e| e.to_string())?;
    let mitm = &config.mitm;
    match command {
        CaCommand::Path(_) => {
            let paths = Ca::paths(mitm).map_err(|e| e.to_string())?;
            Ok(format!(
                "{}\n{}\n",
                paths.cert.display(),
                paths.key.display()
            ))
        }
        CaCommand::Show(args) => {
            let ca = Ca::load(mitm).map_err(|e| e.to_string())?;
            Ok(if args.pem {
                ca.cert_pem().to_string()
            } else {
                show(&ca)
            })
        }
        CaCommand::Rotate(_) => {
            let ca = Ca::rotate(mitm).map_err(|e| e.to_string())?;
            let mut text = format!(
                "rotated the CA: {}\nsha256: {}\n",
                ca.paths_of().cert.display(),
                ca.fingerprint()
            );
            let _ = writeln!(
                text,
                "note: children must trust the new CA: commands started by `egress-proxy run` \
                 from now on do; a running proxy keeps the old one until it restarts, and a \
                 trust store the old one was added to must get {} instead",
                ca.paths_of().cert.display()
            );
            Ok(text)
        }
    }
}

/// `ca show`'s lines.
fn show(ca: &Ca) -> String {
    let CaPaths {
        cert,
        key,
        generated,
    } = ca.paths_of();
    let source = match (generated, ca.created()) {
        (true, true) => "generated now",
        (true, false) => "generated",
        (false, _) => "[mitm] ca_cert and ca_key",
    };
    format!(
        "subject:    {}\nsha256:     {}\nnot before: {}\nnot after:  {}\nsource:     {source}\ncert:       {}\nkey:        {}\n",
        ca.subject(),
        ca.fingerprint(),
        show_time(ca.not_before()),
        show_time(ca.not_after()),
        cert.display(),
        key.display()
    )
}
