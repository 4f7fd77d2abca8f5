//! The one way the tests run curl: never with proxy settings from the environment (a
//! `NO_PROXY` there could send curl around the proxy), always with the proxy named by a flag.
//! curl must be installed: a missing curl fails the test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::reply::Reply;

/// The environment variables through which curl would pick a proxy by itself.
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// How curl reaches the destination.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// `-x URL`: plain HTTP as absolute-form requests to the HTTP proxy.
    Proxy(&'a str),
    /// `--proxytunnel -x URL`: every request inside a CONNECT tunnel.
    Tunnel(&'a str),
    /// `--socks5 ADDR`: curl resolves the name itself and sends the address.
    Socks5(SocketAddr),
    /// `--socks5-hostname ADDR`: the proxy resolves the name.
    Socks5Hostname(SocketAddr),
    /// `--unix-socket PATH`: no proxy, straight to a Unix socket.
    UnixSocket(&'a Path),
}

impl Via<'_> {
    fn args(self) -> Vec<String> {
        let pair = |flag: &str, value: String| vec![flag.to_string(), value];
        match self {
            Via::Proxy(url) => pair("-x", url.to_string()),
            Via::Tunnel(url) => ["--proxytunnel", "-x", url].map(String::from).to_vec(),
            Via::Socks5(addr) => pair("--socks5", addr.to_string()),
            Via::Socks5Hostname(addr) => pair("--socks5-hostname", addr.to_string()),
            Via::UnixSocket(path) => pair("--unix-socket", path.display().to_string()),
        }
    }
}

/// What curl did.
pub struct Output {
    /// The exit code; `None` if a signal ended curl.
    pub exit: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// `curl -q -sS --max-time 10 VIA ARGS`.
fn command(via: Via<'_>, args: &[&str]) -> Command {
    let mut command = Command::new("curl");
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
        .args(["-q", "-sS", "--max-time", "10"])
        .args(via.args())
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Runs curl and waits for it.
pub fn run(via: Via<'_>, args: &[&str]) -> Output {
    Output::from(command(via, args).output())
}

/// Runs curl without blocking the runtime; curl is killed if the test gives up on it.
pub async fn run_async(via: Via<'_>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(command(via, args));
    command.kill_on_drop(true);
    // Longer than curl's own --max-time, so curl's verdict is the one reported.
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .expect("curl outlived its --max-time");
    Output::from(output)
}

/// Runs `curl -i` and returns the final response it printed.
pub fn reply(via: Via<'_>, args: &[&str]) -> Reply {
    run(via, &[&["-i"], args].concat()).reply()
}

impl From<std::io::Result<std::process::Output>> for Output {
    fn from(output: std::io::Result<std::process::Output>) -> Output {
        let output = output.expect("`curl` is required by these tests: install curl");
        Output {
            exit: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Output {
    /// The final response of `curl -i` output (a CONNECT reply before it is skipped).
    pub fn reply(&self) -> Reply {
        assert_eq!(self.exit, Some(0), "curl failed: {}", self.stderr);
        let mut rest = &self.stdout[..];
        loop {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(rest)));
            let after = &rest[end + 4..];
            if after.starts_with(b"HTTP/") {
                rest = after;
                continue;
            }
            let mut reply = Reply::from_head(std::str::from_utf8(&rest[..end]).unwrap());
            reply.body = String::from_utf8_lossy(after).into_owned();
            return reply;
        }
    }

    /// curl succeeded and printed exactly `want`.
    #[track_caller]
    pub fn assert_stdout(&self, want: &str) {
        assert_eq!(self.exit, Some(0), "{}", self.stderr);
        assert_eq!(String::from_utf8_lossy(&self.stdout), want);
    }

    /// curl failed and said `what` on stderr.
    #[track_caller]
    pub fn assert_failed_with(&self, what: &str) {
        assert_ne!(self.exit, Some(0));
        assert!(self.stderr.contains(what), "{}", self.stderr);
    }

    /// The SOCKS5 reply code curl reports: "Can't complete SOCKS5 connection to NAME. (CODE)".
    pub fn socks_reply_code(&self) -> Option<u8> {
        let (_, tail) = self
            .stderr
            .split_once("Can't complete SOCKS5 connection to ")?;
        let (_, code) = tail.split_once(". (")?;
        code.split_once(')')?.0.parse().ok()
    }

    /// curl failed with CURLE_PROXY (97) because the SOCKS5 proxy answered `code`.
    #[track_caller]
    pub fn assert_socks_refused(&self, code: u8) {
        assert_eq!(self.exit, Some(97), "{}", self.stderr);
        assert_eq!(self.socks_reply_code(), Some(code), "{}", self.stderr);
        assert!(
            self.stdout.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&self.stdout)
        );
    }
}
