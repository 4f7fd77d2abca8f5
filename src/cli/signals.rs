//! The signals `run` and the `run --isolate` helper pass on to the command they wait for.

use std::io;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};

/// The signals `egress-proxy` passes on to the child.
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    quit: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install() -> Signals {
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            quit: signal(SignalKind::quit()).ok(),
        }
    }

    pub async fn forward_until_exit(&mut self, child: &mut Child) -> io::Result<ExitStatus> {
        loop {
            let signal = tokio::select! {
                status = child.wait() => return status,
                Some(()) = recv(&mut self.int) => Signal::SIGINT,
                Some(()) = recv(&mut self.term) => Signal::SIGTERM,
                Some(()) = recv(&mut self.hup) => Signal::SIGHUP,
                Some(()) = recv(&mut self.quit) => Signal::SIGQUIT,
            };
            // `id()` is `None` once the child has been reaped: never signal a reused pid.
            let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
                continue;
            };
            let pid = Pid::from_raw(pid);
            if matches!(signal, Signal::SIGINT | Signal::SIGQUIT) && terminal_sent_to_both(pid) {
                continue;
            }
            tracing::debug!(signal = signal.as_str(), "forwarding to the command");
            let _ = kill(pid, signal);
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a Ctrl-C or Ctrl-\ has already reached the child: the terminal signals its whole
/// foreground process group, and when that is ours and the child is still in it, forwarding
/// would deliver the signal twice (a second SIGINT aborts many programs' clean-up). Anything
/// else, including a `kill` aimed at `egress-proxy`, is forwarded. Linux only; elsewhere
/// signals are always forwarded.
fn terminal_sent_to_both(child: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some((pgrp, foreground)) = parse_stat(&stat) else {
        return false;
    };
    foreground > 0
        && foreground == pgrp
        && nix::unistd::getpgid(Some(child)).is_ok_and(|group| group.as_raw() == pgrp)
}

/// `(pgrp, tpgid)` from `/proc/<pid>/stat`: the process group and the foreground process
/// group of the controlling terminal (-1 without one).
fn parse_stat(stat: &str) -> Option<(i32, i32)> {
    // The command name may contain spaces and parentheses; the fields follow the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp session tty_nr tpgid
    let mut fields = rest.split_whitespace();
    let pgrp = fields.nth(2)?.parse().ok()?;
    let tpgid = fields.nth(2)?.parse().ok()?;
    Some((pgrp, tpgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "4242 (a (weird) name) S 1 4240 4240 34816 4240 4194304 0 0";
        assert_eq!(parse_stat(stat), Some((4240, 4240)));
        let daemon = "7 (sh) S 1 7 7 0 -1 4194560";
        assert_eq!(parse_stat(daemon), Some((7, -1)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
