//! A shell script in a fresh, loopback-only network namespace (`unshare --map-root-user
//! --net`, so it works as root and unprivileged). Whatever the script does with addresses,
//! nothing it sends can leave the machine: the namespace has no interface but `lo`.

use std::process::{Command, Stdio};

/// Runs `script` with `sh -eu` in its own network namespace (`lo` up) with `env` set, killed
/// after `seconds`: exit code, stdout, stderr.
pub fn run(script: &str, env: &[(&str, &str)], seconds: u32) -> (i32, String, String) {
    let out = Command::new("timeout")
        .args(["-s", "KILL", &seconds.to_string()])
        .args(["unshare", "--map-root-user", "--net", "--"])
        .args(["sh", "-euc", &format!("ip link set lo up\n{script}")])
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}
