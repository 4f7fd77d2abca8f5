//! Reload when a policy file changes on disk (issue 13 part 5): an in-place write, an editor's
//! write-then-rename, a Kubernetes ConfigMap's `..data` symlink swap, a deleted and re-created
//! file and a requirements edit each reload; a broken write keeps the running policy and counts
//! an error; a burst of writes is one reload; another file in the same directory, or a rewrite
//! with the same bytes, is none; `--no-watch` turns it off.
//!
//! Every effect is seen through a real listener (a destination allowed before is refused after,
//! or the reverse) and the `egress_reloads_total` counters on `/metrics`; every wait polls with
//! a deadline. The watch's debug line for a look that found nothing marks when it has looked.

use std::net::SocketAddr;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use crate::serve::{
    admin_get, command, ephemeral_args, fake_dns, policy_text, proxy_get, Dir, Serve, DEADLINE,
};
use crate::support::fake_dns::FakeDns;
use crate::support::origin::HttpOrigin;
use crate::support::prometheus::sample;
use nix::sys::signal::Signal;

/// The startup line of a running watch.
const WATCHING: &str = "watching the policy files for changes";
/// The debug line of a look that found the policy files as they were.
const UNCHANGED: &str = "no policy file changed";
const CHANGED: &str = "a policy file changed on disk; reloading";
const RELOADED: &str = "policy reloaded";
const KEPT: &str = "reload failed; keeping the running policy";

/// allowed.test and other.test allowed; the policy a test starts from.
const OPEN: &str = "\"allowed.test\" = \"allow\"\n\"other.test\" = \"allow\"";
/// allowed.test denied by a rule, other.test still allowed.
const TIGHT: &str = "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"";

/// One test's world: a directory, the fake DNS server and an origin both names reach.
struct World {
    dir: Dir,
    dns: FakeDns,
    origin: HttpOrigin,
}

impl World {
    fn new() -> World {
        World {
            dir: Dir::new(),
            dns: fake_dns(),
            origin: HttpOrigin::start(),
        }
    }

    fn policy(&self, domains: &str) -> String {
        policy_text(&self.dns, "", domains)
    }

    /// `serve --config CONFIG EXTRA` with the watch's debug lines, after its first look.
    fn serve(&self, config: &Path, extra: &[&str]) -> Serve {
        let mut args = ephemeral_args(config);
        args.extend_from_slice(extra);
        let mut cmd = command(&args, &self.dir.runtime());
        cmd.env("RUST_LOG", "info,egress_proxy::watch=debug");
        let mut serve = Serve::spawn(cmd).unwrap_or_else(|f| panic!("serve failed: {f:?}"));
        if !extra.contains(&"--no-watch") {
            assert!(
                serve.seen.iter().any(|l| l.contains(WATCHING)),
                "no {WATCHING:?} among the startup lines:\n{}",
                serve.stderr()
            );
            // The first look may have come before the last startup line.
            if !serve.seen.iter().any(|l| l.contains(UNCHANGED)) {
                serve.wait_for_line(UNCHANGED);
            }
        }
        serve
    }

    /// Polls GETs of `host` at the origin until one answers `status`; that reply's
    /// `x-proxy-reason` (`None` for an allowed request).
    fn until_status(&self, serve: &mut Serve, host: &str, status: u16) -> Option<String> {
        let authority = format!("{host}:{}", self.origin.addr.port());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let reply = proxy_get(serve.http, &authority);
            if reply.status == status {
                return reply.header("x-proxy-reason").map(str::to_string);
            }
            assert!(
                Instant::now() < deadline,
                "GET {authority} still answers {} within {DEADLINE:?}, not {status}; stderr:\n{}",
                reply.status,
                serve.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The policy of [`TIGHT`] decides: allowed.test refused by its rule, other.test passes.
    fn expect_tight(&self, serve: &mut Serve) {
        let reason = self.until_status(serve, "allowed.test", 403);
        assert_eq!(reason.as_deref(), Some("deny-rule"));
        assert_eq!(self.until_status(serve, "other.test", 200), None);
    }
}

/// `egress_reloads_total` for `result="ok"` and `result="error"` (0 before the first).
fn reloads(admin: SocketAddr) -> (f64, f64) {
    let metrics = admin_get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    let count = |result| {
        sample(&metrics.body, "egress_reloads_total", &[("result", result)]).unwrap_or(0.0)
    };
    (count("ok"), count("error"))
}

/// Polls the reload counters until they are `want`.
fn until_reloads(serve: &mut Serve, want: (f64, f64)) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = reloads(serve.admin);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reloads (ok, error) are {got:?}, not {want:?}; stderr:\n{}",
            serve.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_in_place_write_reloads() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let mut serve = world.serve(&policy, &[]);
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);
    let inode = std::fs::metadata(&policy).unwrap().ino();

    std::fs::write(&policy, world.policy(TIGHT)).unwrap();
    assert_eq!(std::fs::metadata(&policy).unwrap().ino(), inode, "in place");
    world.expect_tight(&mut serve);
    serve.wait_for_line(CHANGED);
    serve.wait_for_line(RELOADED);
    until_reloads(&mut serve, (1.0, 0.0));
    serve.stop();
}

#[test]
fn an_editor_style_write_then_rename_reloads() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let mut serve = world.serve(&policy, &[]);
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);
    let inode = std::fs::metadata(&policy).unwrap().ino();

    let temp = world.dir.write(".policy.toml.swp", &world.policy(TIGHT));
    std::fs::rename(&temp, &policy).unwrap();
    assert_ne!(std::fs::metadata(&policy).unwrap().ino(), inode, "replaced");
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (1.0, 0.0));
    serve.stop();
}

/// A ConfigMap volume as the kubelet writes it: `policy.toml -> ..data/policy.toml`,
/// `..data -> ..<timestamp>`; an update writes a new timestamped directory, points a new
/// `..data_tmp` link at it, renames that over `..data` and removes the old directory. The
/// file's path never sees an event; only the mount directory does.
#[test]
fn a_configmap_symlink_swap_reloads_and_the_watch_follows_the_new_directory() {
    let world = World::new();
    let mount = world.dir.path("configmap");
    let version = |name: &str, text: &str| {
        std::fs::create_dir(mount.join(name)).unwrap();
        std::fs::write(mount.join(name).join("policy.toml"), text).unwrap();
    };
    let swap = |name: &str| {
        symlink(name, mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    };
    std::fs::create_dir(&mount).unwrap();
    version("..2026_a", &world.policy(OPEN));
    symlink("..2026_a", mount.join("..data")).unwrap();
    symlink("..data/policy.toml", mount.join("policy.toml")).unwrap();
    let mut serve = world.serve(&mount.join("policy.toml"), &[]);
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);

    version("..2026_b", &world.policy(TIGHT));
    swap("..2026_b");
    std::fs::remove_dir_all(mount.join("..2026_a")).unwrap();
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (1.0, 0.0));

    // A second update: the watch moved on from the removed directory.
    version("..2026_c", &world.policy(OPEN));
    swap("..2026_c");
    std::fs::remove_dir_all(mount.join("..2026_b")).unwrap();
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);
    until_reloads(&mut serve, (2.0, 0.0));

    // A write inside the current data directory, where only a watch that followed the swap
    // looks (the mount directory sees no event for it).
    std::fs::write(mount.join("..2026_c/policy.toml"), world.policy(TIGHT)).unwrap();
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (3.0, 0.0));
    serve.stop();
}

#[test]
fn a_broken_write_keeps_the_policy_and_a_fix_or_a_re_created_file_is_picked_up() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(TIGHT));
    let mut serve = world.serve(&policy, &[]);
    world.expect_tight(&mut serve);

    // An unknown key: had it been applied, allowed.test would pass.
    let broken = world
        .policy(OPEN)
        .replace("enabled = true", "enabled = true\nbogus = 1");
    std::fs::write(&policy, broken).unwrap();
    let failed = serve.wait_for_line(KEPT);
    assert!(failed.contains("bogus"), "{failed}");
    until_reloads(&mut serve, (0.0, 1.0));
    world.expect_tight(&mut serve);

    std::fs::write(&policy, world.policy(OPEN)).unwrap();
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);
    until_reloads(&mut serve, (1.0, 1.0));

    // Deleted: a reload that cannot read the file, refused like a broken one.
    std::fs::remove_file(&policy).unwrap();
    let failed = serve.wait_for_line(KEPT);
    assert!(failed.contains(&policy.display().to_string()), "{failed}");
    until_reloads(&mut serve, (1.0, 2.0));
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);

    // Created again: picked up.
    std::fs::write(&policy, world.policy(TIGHT)).unwrap();
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (2.0, 2.0));
    assert!(serve.try_wait().is_none(), "a bad file must not stop serve");
    serve.stop();
}

#[test]
fn a_requirements_edit_reloads() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let managed = |host: &str| format!("[experimental_network]\ndenied_domains = [\"{host}\"]\n");
    let requirements = world
        .dir
        .write("requirements.toml", &managed("nothing.test"));
    let path = requirements.to_str().unwrap();
    let mut serve = world.serve(&policy, &["--requirements", path]);
    assert_eq!(world.until_status(&mut serve, "allowed.test", 200), None);

    std::fs::write(&requirements, managed("allowed.test")).unwrap();
    let reason = world.until_status(&mut serve, "allowed.test", 403);
    assert_eq!(reason.as_deref(), Some("deny-rule"));
    until_reloads(&mut serve, (1.0, 0.0));
    serve.stop();
}

/// Twenty writes in a row, each different: a few reloads at most, and the last write decides.
#[test]
fn a_burst_of_writes_is_debounced_and_the_last_one_wins() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let mut serve = world.serve(&policy, &[]);
    for i in 0..20 {
        let domains = if i % 2 == 0 { OPEN } else { TIGHT };
        std::fs::write(&policy, format!("# write {i}\n{}", world.policy(domains))).unwrap();
    }
    world.expect_tight(&mut serve);
    // A look after the burst that finds nothing new: every reload the burst caused is done.
    world.dir.write("notes.txt", "unrelated");
    serve.wait_for_line(UNCHANGED);
    let (ok, error) = reloads(serve.admin);
    assert!(
        ok >= 1.0 && ok + error <= 3.0,
        "reloads ok={ok} error={error}; stderr:\n{}",
        serve.stderr()
    );
    world.expect_tight(&mut serve);
    serve.stop();
}

/// Events that change no policy input: another file in the directory, the same bytes written
/// again. The watch looks (its debug line says so) and does not reload; a real edit then does.
#[test]
fn another_file_in_the_directory_or_the_same_bytes_do_not_reload() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let mut serve = world.serve(&policy, &[]);

    world.dir.write("notes.txt", "unrelated");
    serve.wait_for_line(UNCHANGED);
    std::fs::write(&policy, world.policy(OPEN)).unwrap();
    serve.wait_for_line(UNCHANGED);
    assert_eq!(reloads(serve.admin), (0.0, 0.0));
    assert!(!serve.stderr().contains(RELOADED), "{}", serve.stderr());

    std::fs::write(&policy, world.policy(TIGHT)).unwrap();
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (1.0, 0.0));
    serve.stop();
}

/// `--no-watch`: no watch starts; an edit waits for SIGHUP, which reloads it once.
#[test]
fn no_watch_leaves_reloads_to_sighup() {
    let world = World::new();
    let policy = world.dir.write("policy.toml", &world.policy(OPEN));
    let mut serve = world.serve(&policy, &["--no-watch"]);
    assert!(
        !serve.seen.iter().any(|l| l.contains(WATCHING)),
        "{}",
        serve.stderr()
    );
    std::fs::write(&policy, world.policy(TIGHT)).unwrap();
    serve.signal(Signal::SIGHUP);
    world.expect_tight(&mut serve);
    until_reloads(&mut serve, (1.0, 0.0));
    assert!(!serve.stderr().contains(CHANGED), "{}", serve.stderr());
    serve.stop();
}
