//! `egress-proxy run` through the built binary, for the tests of `tests/run.rs` and
//! `tests/run_blocked.rs`: a run with a deadline, its output, and its stdout and stderr line by
//! line while it runs.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::bin::BIN;

/// No run needs more than a fraction of this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What one finished run left behind.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `egress-proxy ARGS` in its own process group (so a terminal running the tests is never its
/// foreground group), without `RUST_LOG`, with stdin from `/dev/null` unless `configure`
/// changes it.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    super::bin::without_proxy_env(&mut cmd);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Collects stdout and stderr on threads while the process runs.
pub struct Running {
    pub child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    /// Every stdout line as it arrives.
    lines: mpsc::Receiver<String>,
    /// Every stderr line as it arrives.
    err_lines: mpsc::Receiver<String>,
}

/// Reads `from` to the end on a thread, sending each line as it arrives; the thread returns
/// the whole text.
fn read_lines(
    from: impl Read + Send + 'static,
) -> (thread::JoinHandle<String>, mpsc::Receiver<String>) {
    let (send, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        let mut from = BufReader::new(from);
        loop {
            let mut bytes = Vec::new();
            match from.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&bytes).into_owned();
                    all.push_str(&line);
                    let _ = send.send(line);
                }
            }
        }
    });
    (reader, lines)
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("spawn egress-proxy");
        let (stdout, lines) = read_lines(child.stdout.take().expect("stdout is piped"));
        let (stderr, err_lines) = read_lines(child.stderr.take().expect("stderr is piped"));
        Running {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            lines,
            err_lines,
        }
    }

    /// The next stdout line, within the deadline.
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("no stdout line from the child within the deadline")
    }

    /// The next stderr line, `None` if none comes within `wait`.
    pub fn next_stderr_line(&self, wait: Duration) -> Option<String> {
        self.err_lines.recv_timeout(wait).ok()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits for the exit; past the deadline kills the whole group and fails the test.
    pub fn finish(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for egress-proxy") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap());
                panic!("egress-proxy did not exit within {DEADLINE:?}; stderr: {stderr:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let code = status
            .code()
            .unwrap_or_else(|| panic!("egress-proxy itself was killed: {status:?}"));
        let join = |h: Option<thread::JoinHandle<String>>| h.map(|h| h.join().unwrap());
        Output {
            code,
            stdout: join(self.stdout.take()).unwrap_or_default(),
            stderr: join(self.stderr.take()).unwrap_or_default(),
        }
    }
}

pub fn run(args: &[&str]) -> Output {
    Running::start(command(args)).finish()
}

pub fn require_curl() {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "curl is required by these tests and was not found");
}
