//! The files in `deploy/` checked by the tools that would reject them (`systemd-analyze`,
//! `nft`, `hadolint`, a YAML parser) and against each other and the binary: the flags the unit
//! passes exist, the ports the firewall opens are the policy's, the ConfigMap is the image's
//! policy. A tool that is not installed skips its part with a note on stderr that names the
//! check, printed even when the test passes (the test harness keeps a passing test's own
//! output to itself).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_egress-proxy");
/// Where the unit and the image install the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/egress-proxy";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `tool` is on the PATH; if not, says that `check` was skipped.
fn installed(tool: &str, check: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skipped(check, &format!("{tool} is not installed"));
    }
    found
}

/// `deploy: skipped CHECK: WHY` on the real stderr: written past the harness's capture (which
/// hides what a passing test prints), so a run that skipped a check says so.
fn skipped(check: &str, why: &str) {
    let line = format!("deploy: skipped {check}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The values of `Key=` lines of a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The port of a `scheme://host:port` listener URL in a policy file.
fn listener_port(policy: &str, key: &str) -> u16 {
    let line = policy
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("no {key} in the policy"));
    let url = line.split('"').nth(1).unwrap();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// The ports of a policy's HTTP and SOCKS5 listeners, which a firewall or an image opens.
fn proxy_ports(policy: &str) -> (u16, u16) {
    (
        listener_port(policy, "proxy_url"),
        listener_port(policy, "socks_url"),
    )
}

#[test]
fn systemd_unit_verifies_with_a_low_exposure_score() {
    if !installed(
        "systemd-analyze",
        "`systemd-analyze verify` and `security` of the unit",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `verify` checks that ExecStart's binary exists: point it at the one under test.
    let unit = read("deploy/egress-proxy.service").replace(INSTALLED_BIN, BIN);
    let path = dir.path().join("egress-proxy.service");
    std::fs::write(&path, unit).unwrap();
    let path = path.to_str().unwrap();

    let verify = run("systemd-analyze", &["verify", path]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    // Unknown keys and unparsable values are warnings with exit status 0: any line about the
    // file is a defect.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("egress-proxy.service"))
        .collect();
    assert!(
        verify.status.success() && complaints.is_empty(),
        "{}",
        describe(&verify)
    );

    let security = run(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", path],
    );
    assert!(security.status.success(), "{}", describe(&security));
}

#[test]
fn systemd_unit_uses_the_sysusers_user_and_reloads_with_sighup_after_validating() {
    let unit = read("deploy/egress-proxy.service");
    let sysusers = read("deploy/egress-proxy.sysusers");
    let user = sysusers
        .lines()
        .find_map(|l| l.strip_prefix("u "))
        .and_then(|l| l.split_whitespace().next())
        .expect("a `u` line in egress-proxy.sysusers");
    assert_eq!(unit_values(&unit, "User"), [user]);

    let reload = unit_values(&unit, "ExecReload");
    assert_eq!(reload.len(), 2, "validate, then SIGHUP: {reload:?}");
    assert_eq!(reload[1], "/bin/kill -HUP $MAINPID");
    let validate: Vec<&str> = reload[0].split_whitespace().collect();
    assert_eq!(validate[0], INSTALLED_BIN);
    let config = validate.iter().position(|a| *a == "--config").unwrap() + 1;
    let start: Vec<&str> = unit_values(&unit, "ExecStart")[0]
        .split_whitespace()
        .collect();
    let start_config = start.iter().position(|a| *a == "--config").unwrap() + 1;
    assert_eq!(
        validate[config], start[start_config],
        "reload validates the file the service runs"
    );

    // The same validation, on the shipped dev-box policy the install steps copy there.
    let mut args: Vec<&str> = validate[1..].to_vec();
    args[config - 1] = "policy/dev-box.toml";
    let output = run(BIN, &args);
    assert!(output.status.success(), "{}", describe(&output));
}

/// ExecStart's flags, on the dev-box policy with ephemeral listeners: the service starts, logs
/// its listeners, writes the audit file it was given and exits 0 on SIGTERM.
#[test]
fn systemd_exec_start_flags_start_a_gateway() {
    let unit = read("deploy/egress-proxy.service");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let start: Vec<&str> = unit_values(&unit, "ExecStart")[0]
        .split_whitespace()
        .collect();
    assert_eq!(start[0], INSTALLED_BIN);
    let mut args: Vec<String> = start[1..].iter().map(|a| a.to_string()).collect();
    for (flag, value) in [
        ("--config", "policy/dev-box.toml".to_string()),
        ("--audit-log", audit.display().to_string()),
    ] {
        let at = args.iter().position(|a| a == flag).unwrap() + 1;
        args[at] = value;
    }
    for flag in ["--http-listen", "--socks-listen", "--admin-listen"] {
        args.extend([flag.to_string(), "127.0.0.1:0".to_string()]);
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .current_dir(repo())
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, recv) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("admin API listening"))
    {
        match recv.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no admin listener line: {lines:#?}");
            }
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    // --log-format json: every line a machine can parse.
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    }
    assert!(audit.exists(), "--audit-log FILE is created at start");
}

#[test]
fn nftables_rules_parse_and_open_exactly_the_proxy_ports() {
    let rules = read("deploy/egress-gateway.nft");
    let policy = read("policy/dev-box.toml");
    let (http, socks) = proxy_ports(&policy);
    let ports = format!("define PROXY_PORTS = {{ {http}, {socks} }}");
    assert!(
        rules.lines().any(|l| l == ports),
        "the firewall opens the dev-box listener ports ({ports})"
    );
    let admin = listener_port(&policy, "admin_url").to_string();
    assert!(
        !rules
            .lines()
            .any(|l| l.starts_with("define") && l.contains(&admin)),
        "the sandbox group must not reach the admin API"
    );

    if !installed("nft", "`nft -c` of deploy/egress-gateway.nft") {
        return;
    }
    // Names resolve when the file loads: use ones that exist on every machine.
    let rules = rules
        .replace("PROXY_USER = \"egress-proxy\"", "PROXY_USER = \"root\"")
        .replace("SANDBOX_GROUP = \"sandbox\"", "SANDBOX_GROUP = \"root\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress-gateway.nft");
    std::fs::write(&path, rules).unwrap();
    let output = run("nft", &["-c", "-f", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Operation not permitted") {
        skipped(
            "`nft -c` of deploy/egress-gateway.nft",
            "nft needs CAP_NET_ADMIN here",
        );
        return;
    }
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn containerfile_lints_and_copies_only_what_its_context_has() {
    let containerfile = read("deploy/Containerfile");
    let ignore = read("deploy/Containerfile.dockerignore");
    let included: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    let copies = containerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="));
    for copy in copies {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                included.contains(source),
                "{copy}: {source} is not in the build context"
            );
            assert!(repo().join(source).exists(), "{copy}: {source} is missing");
        }
    }
    let user = containerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric uid");
    assert_ne!(uid, 0, "the image runs as non-root");
    let policy = read("deploy/container-policy.toml");
    let (http, socks) = proxy_ports(&policy);
    let expose = format!("EXPOSE {http} {socks}");
    assert!(
        containerfile.lines().any(|l| l == expose),
        "the image exposes its policy's listeners ({expose})"
    );

    if !installed("hadolint", "`hadolint` of deploy/Containerfile") {
        return;
    }
    let output = run("hadolint", &["deploy/Containerfile"]);
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn container_policy_validates_and_is_the_configmap() {
    let output = run(
        BIN,
        &["validate", "--config", "deploy/container-policy.toml"],
    );
    assert!(output.status.success(), "{}", describe(&output));

    let manifest = read("deploy/kubernetes.yaml");
    let mut lines = manifest.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == "  policy.toml: |")
        .expect("the ConfigMap has a policy.toml block");
    let block: String = lines
        .take_while(|l| *l != "---")
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l.trim())))
        .collect();
    assert_eq!(
        block,
        read("deploy/container-policy.toml"),
        "the ConfigMap's policy.toml and deploy/container-policy.toml differ"
    );
}

/// Structure the comments in kubernetes.yaml promise, checked with PyYAML.
const KUBERNETES_CHECK: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def fail(msg):
    print(msg); sys.exit(1)
for d in docs:
    if not (d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name")):
        fail(f"document without apiVersion/kind/metadata.name: {d}")
by = {}
for d in docs:
    by.setdefault(d["kind"], []).append(d)
for kind in ("Namespace", "ConfigMap", "Deployment", "Service", "NetworkPolicy"):
    if kind not in by: fail(f"no {kind}")
dep = by["Deployment"][0]
pod = dep["spec"]["template"]["spec"]
labels = dep["spec"]["template"]["metadata"]["labels"]
if dep["spec"]["selector"]["matchLabels"].items() - labels.items():
    fail("the Deployment's selector does not match its pods")
if not pod["securityContext"].get("runAsNonRoot"): fail("pods may run as root")
c = pod["containers"][0]
sc = c["securityContext"]
if sc.get("allowPrivilegeEscalation") is not False: fail("privilege escalation allowed")
if not sc.get("readOnlyRootFilesystem"): fail("writable root file system")
if sc.get("capabilities", {}).get("drop") != ["ALL"]: fail("capabilities not dropped")
args = c["args"]
config = args[args.index("--config") + 1]
mount = next(m for m in c["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
cm = next(m for m in by["ConfigMap"] if m["metadata"]["name"] == volume["configMap"]["name"])
if config.rsplit("/", 1)[1] not in cm["data"]: fail(f"{config} is not a key of the ConfigMap")
if "subPath" in mount: fail("the policy is mounted with subPath, which never updates")
if "--no-watch" in args: fail("the pods do not reload a ConfigMap update")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
if sorted(ports.values()) != sorted(int(a) for a in sys.argv[2:]):
    fail(f"container ports {ports} are not the policy's listeners {sys.argv[2:]}")
svc = by["Service"][0]
if svc["spec"]["selector"].items() - labels.items(): fail("the Service selects no proxy pod")
for p in svc["spec"]["ports"]:
    if ports.get(p["targetPort"]) != p["port"]: fail(f"Service port {p} is not a proxy port")
want = sorted(ports.values())
proxy_np = next(n for n in by["NetworkPolicy"] if n["metadata"]["namespace"] == dep["metadata"]["namespace"])
if proxy_np["spec"]["podSelector"]["matchLabels"].items() - labels.items():
    fail("the proxy NetworkPolicy selects no proxy pod")
got = sorted(p["port"] for r in proxy_np["spec"]["ingress"] for p in r["ports"])
if got != want: fail(f"proxy ingress ports {got} != {want}")
excepted = {e for r in proxy_np["spec"]["egress"] for t in r["to"] for e in t.get("ipBlock", {}).get("except", [])}
for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "fc00::/7"):
    if cidr not in excepted: fail(f"the proxy pods may reach {cidr}")
sandbox_np = next(n for n in by["NetworkPolicy"] if n["metadata"]["namespace"] != dep["metadata"]["namespace"])
if sandbox_np["spec"]["podSelector"] != {} or sandbox_np["spec"]["policyTypes"] != ["Egress"]:
    fail("the sandbox NetworkPolicy does not cover every pod's egress")
tcp = sorted(p["port"] for r in sandbox_np["spec"]["egress"] for p in r["ports"] if p["port"] != 53)
if tcp != want: fail(f"sandboxes may reach {tcp}, not only the proxy ports {want}")
if any("ipBlock" in t for r in sandbox_np["spec"]["egress"] for t in r["to"]):
    fail("sandboxes may reach addresses directly")
"#;

#[test]
fn kubernetes_manifest_keeps_its_promises() {
    let have_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_yaml {
        skipped(
            "the checks of deploy/kubernetes.yaml",
            "python3 with PyYAML is not installed",
        );
        return;
    }
    let policy = read("deploy/container-policy.toml");
    let http = listener_port(&policy, "proxy_url").to_string();
    let socks = listener_port(&policy, "socks_url").to_string();
    let manifest: &Path = Path::new("deploy/kubernetes.yaml");
    let output = run(
        "python3",
        &[
            "-c",
            KUBERNETES_CHECK,
            manifest.to_str().unwrap(),
            &http,
            &socks,
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
}
