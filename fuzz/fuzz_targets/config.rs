//! Configuration loading on arbitrary TOML text: text → `Config` → `Policy` → a decision.
//!
//! Input: the text of one `--config` file, optionally followed by a NUL and the text of a
//! `--requirements` file. Properties: nothing panics, and every error is one line (SPEC
//! section 3: errors are one clear line each, never a panic or a backtrace).
#![no_main]

use egress_proxy::config::{load_texts, Sources};
use egress_proxy::policy::{Access, Target};
use libfuzzer_sys::fuzz_target;

/// Destinations decided against every policy that compiles: a name, a local name, addresses.
const TARGETS: &[&str] = &[
    "example.com:443",
    "api.github.com:22",
    "localhost:80",
    "127.0.0.1:8080",
    "[::ffff:10.0.0.1]:443",
    "169.254.169.254:80",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, requirements) = match text.split_once('\0') {
        Some((config, requirements)) => (config, Some(("requirements.toml", requirements))),
        None => (text, None),
    };
    let loaded = load_texts(
        &[("config.toml", config)],
        requirements,
        &Sources::default(),
    );
    let config = match loaded {
        Ok(config) => config,
        Err(e) => return one_line(&e.to_string()),
    };
    let policy = match config.policy() {
        Ok(policy) => policy,
        Err(e) => return one_line(&e.to_string()),
    };
    for target in TARGETS {
        let target = Target::parse_authority(target, None).expect("valid target");
        let _ = policy.decide(&target, Access::Tunnel);
        let _ = policy.decide(
            &target,
            Access::Http {
                method: "GET",
                path: "/",
                body: false,
            },
        );
    }
});

fn one_line(message: &str) {
    assert!(!message.contains(['\n', '\r']), "{message:?}");
}
