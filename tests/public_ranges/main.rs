//! Declared public ranges (`public_ranges`, `--public-range`) through real listeners and the
//! built binary: a fake-IP answer is blocked until its range is declared, then CONNECT,
//! forward and SOCKS5 (TCP and UDP) reach it; no declaration opens a loopback, link-local or
//! metadata spelling.
//!
//! Every test that lets traffic through runs inside a loopback-only network namespace whose
//! `lo` also carries 198.18.0.1 (see [`in_namespace`]), so a wrong allow can reach nothing
//! but that namespace.

#[path = "../support/cli.rs"]
mod cli;
#[path = "../support/mod.rs"]
mod support;

mod commands;
mod listeners;

/// Set in the copy of this binary that runs inside the namespace.
const INSIDE: &str = "EGRESS_PUBLIC_RANGES_NETNS";

/// Whether this process is the copy inside the namespace, which runs the test's body. Outside
/// it, runs `test` (its path in this binary) again in a loopback-only namespace whose `lo` also
/// carries 198.18.0.1, and fails when it fails there.
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let script = "ip addr add 198.18.0.1/32 dev lo\n\
                  exec \"$EXE\" --exact \"$TEST\" --nocapture --test-threads 1";
    let (code, out, err) = support::netns::run(
        script,
        &[
            ("EXE", exe.to_str().expect("UTF-8 path")),
            ("TEST", test),
            (INSIDE, "1"),
        ],
        120,
    );
    assert_eq!(code, 0, "in the namespace:\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("test result: ok. 1 passed"),
        "the test did not run in the namespace:\n{out}"
    );
    false
}
