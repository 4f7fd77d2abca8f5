#!/usr/bin/env bash
# Side-by-side loopback benchmark of egress-proxy against squid, tinyproxy, dante, microsocks and
# OpenAI Codex's network proxy (installed from npm into a cache directory when missing), in a
# network namespace with only loopback, with ../shared/bench/proxybench.py (see ../shared/bench/README.md for what is measured and how
# to read it: compare the "vs direct" / "vs bestpeer" ratios, not absolute numbers).
#
#   bash integration/bench.sh            # full run (3 reps x 5 s per test, 5-10 min): quiet machine!
#   bash integration/bench.sh --quick    # < 60 s plumbing / regression check
#   bash integration/bench.sh --quick --keep-tmp   # keep /tmp/proxybench-* with every proxy's log
#
# On Linux, integration/bench-isolate.sh then adds the `run --isolate` lines to the table, and
# integration/bench-mitm.sh the HTTPS-inspection lines beside mitmproxy (when `mitmdump` is on
# PATH or in $MITMDUMP; `pip install mitmproxy`).
#
# Extra arguments go to proxybench.py unchanged (and come last, so e.g. `--peers squid,dante`
# overrides the default peer list).
#
# Writes integration/results/bench-<date>.txt (the printed table), .json (proxybench --json)
# and .log (the harness's stderr: probe failures, progress, warnings); a full run also rewrites
# the summary block of README.md's performance section (integration/bench-summary.py).
#
# Exit status: 0 ok; 1 build or harness failed; 2 a required tool is missing; 3 the harness ran
# but egress-proxy did not start or failed a functional probe (results are still written).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
harness="$(cd "$repo/.." && pwd)/shared/bench/proxybench.py"
template="$repo/integration/bench-policy.toml.tmpl"
results="$repo/integration/results"
peers="squid,tinyproxy,dante,microsocks"

die() {
    echo "bench.sh: $*" >&2
    exit "${code:-1}"
}

# ---------------------------------------------------------------- preflight
# tool -> Debian package that provides it. Everything here is required: the harness itself
# needs curl, wrk and nginx; ab runs test (b'); the peers are the point of the comparison (the
# harness would silently skip a missing one and "vs bestpeer" would change meaning).
declare -A required=(
    [curl]=curl [wrk]=wrk [nginx]=nginx-light [ab]=apache2-utils
    [squid]=squid [tinyproxy]=tinyproxy [danted]=dante-server [microsocks]=microsocks
)
# Only used for the Python-free anchors line; a warning when missing.
declare -A optional=([socat]=socat [iperf3]=iperf3)

missing=()
for tool in "${!required[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (apt package: ${required[$tool]})")
done
if ((${#missing[@]})); then
    {
        echo "bench.sh: required tools are missing:"
        printf '  %s\n' "${missing[@]}"
        echo "install them with:"
        echo "  apt-get update && apt-get install -y --no-install-recommends \\"
        echo "      nginx-light curl wrk apache2-utils tinyproxy squid microsocks dante-server socat iperf3"
    } >&2
    exit 2
fi
for tool in "${!optional[@]}"; do
    command -v "$tool" >/dev/null 2>&1 ||
        echo "bench.sh: warning: $tool missing (apt package: ${optional[$tool]}); its anchor is skipped" >&2
done
code=2
command -v python3 >/dev/null 2>&1 || die "python3 (>= 3.11) is missing (apt package: python3)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "proxybench needs Python >= 3.11, found $(python3 -V 2>&1) (apt package: python3)"
command -v cargo >/dev/null 2>&1 || die "cargo is missing (install Rust with rustup, not apt)"
[[ -f "$harness" ]] || die "harness not found at $harness (expected ../shared next to the repo)"
[[ -f "$template" ]] || die "policy template not found at $template"

# The harness starts its own nginx/squid/tinyproxy/danted on free high ports; a system service
# of the same name would compete for the 2 cores and skew every ratio.
for svc in nginx squid tinyproxy danted sockd microsocks; do
    if pgrep -x "$svc" >/dev/null 2>&1; then
        echo "bench.sh: warning: a '$svc' process is already running (pids: $(pgrep -x "$svc" | tr '\n' ' '))" \
            "- stop the system service first or the numbers are skewed" >&2
    fi
done

# ---------------------------------------------------------------- Codex
# OpenAI Codex's own network proxy runs beside us (as a second proxy under test, so it never
# counts as the "best peer"). Installed from npm into a cache directory when missing, never into
# the repository; `codex sandbox` needs bwrap and neither a login nor a model request.
codex_version=0.169.0
codex_cache="${EGRESS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/egress-proxy-bench}/codex-$codex_version"
codex_bin="$codex_cache/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
codex=()
if [[ ! -x "$codex_bin" ]] && command -v npm >/dev/null 2>&1; then
    echo "bench.sh: installing @openai/codex@$codex_version into $codex_cache" >&2
    mkdir -p "$codex_cache"
    npm install --prefix "$codex_cache" --no-audit --no-fund "@openai/codex@$codex_version" >&2 ||
        echo "bench.sh: warning: npm install of @openai/codex@$codex_version failed" >&2
fi
if [[ ! -x "$codex_bin" ]]; then
    echo "bench.sh: warning: no Codex binary at $codex_bin (needs npm); Codex is left out" >&2
elif ! command -v bwrap >/dev/null 2>&1; then
    echo "bench.sh: warning: bwrap is missing (apt package: bubblewrap); Codex is left out" >&2
else
    codex=(--proxy "codex=env CODEX_BIN=$codex_bin sh $(dirname "$harness")/examples/codex-proxy.sh {port_file}")
fi
# The whole comparison runs in a network namespace with only loopback, so no proxy under test
# or peer can reach anything off the machine.
netns=()
if unshare --net true 2>/dev/null; then
    netns=(unshare --net --fork)
else
    echo "bench.sh: warning: cannot create a network namespace; running on the host's loopback" >&2
fi

# ---------------------------------------------------------------- build
code=1
# The release binary as shipped (`cargo build-static`, .cargo/config.toml): glibc linked in.
echo "bench.sh: cargo build-static" >&2
(cd "$repo" && cargo build-static) || die "cargo build-static failed"
bin="$repo/target/release/egress-proxy"
[[ -x "$bin" ]] || die "no binary at $bin after the build"

# ---------------------------------------------------------------- run
mkdir -p "$results"
stamp="$(date +%Y-%m-%d-%H%M%S)"
txt="$results/bench-$stamp.txt"
json="$results/bench-$stamp.json"
log="$results/bench-$stamp.log"

# XDG_RUNTIME_DIR={tmpdir}: the admin token egress-proxy generates at start lands in the
# harness's temp dir (removed afterwards) instead of a new /tmp/egress-proxy-<pid>/ per run.
# `env` because proxybench runs CMD as `sh -c "exec CMD"`.
proxy_cmd="env XDG_RUNTIME_DIR={tmpdir} $bin serve --config {config}"

echo "bench.sh: $harness -> $txt" >&2
# stdout (the table) -> $txt and the terminal; stderr -> $log and the terminal. No process
# substitution, so both tee's have finished when the pipeline returns; with pipefail the status
# is the harness's unless a tee itself failed.
set +e
{
    (
        cd "$repo" &&
            "${netns[@]}" sh -c '[ -z "$1" ] || ip link set lo up; shift; exec "$@"' sh "${netns[*]}" \
                python3 "$harness" \
                --proxy "ours=$proxy_cmd" \
                "${codex[@]}" \
                --config-template "$template" \
                --peers "$peers" \
                --json "$json" \
                "$@"
    ) 2>&1 1>&3 3>&- | tee "$log" >&2
} 3>&1 | tee "$txt"
rc=$?
set -e
if ((rc != 0)); then
    die "proxybench failed (exit $rc); see $log"
fi

# The harness reports a proxy that did not start or failed a functional probe as a note and
# simply skips that capability; for our own proxy that makes the run meaningless, so fail.
if [[ -f "$json" ]]; then
    notes="$(python3 - "$json" <<'EOF'
import json, sys
ours = json.load(open(sys.argv[1]))["proxies"].get("ours", {})
bad = [n for n in ours.get("notes", [])
       if "probe failed" in n or "not usable" in n or "did not listen" in n]
print("\n".join(bad))
EOF
)"
    if [[ -n "$notes" ]]; then
        echo "bench.sh: egress-proxy failed its functional probes:" >&2
        sed 's/^/  /' <<<"$notes" >&2
        echo "bench.sh: rerun with --keep-tmp and read /tmp/proxybench-*/ours.log" >&2
        exit 3
    fi
fi
# `run --isolate` is no proxybench test: its lines (download ratio, start-up) are appended.
quick=()
[[ " $* " == *" --quick "* ]] && quick=(--quick)
if [[ "$(uname -s)" == Linux ]]; then
    bash "$here/bench-isolate.sh" "$bin" "${quick[@]}" | tee -a "$txt" ||
        echo "bench.sh: warning: the run --isolate measurement failed" >&2
fi
# HTTPS inspection is no proxybench test either: intercepted GETs beside mitmproxy.
bash "$here/bench-mitm.sh" "$bin" "${quick[@]}" | tee -a "$txt" ||
    echo "bench.sh: warning: the HTTPS inspection measurement failed" >&2
# A full run (not --quick) is what the README quotes: its summary block is rewritten from the
# table just written, never by hand.
if [[ " $* " != *" --quick "* ]]; then
    python3 "$here/bench-summary.py" "$txt" --readme "$repo/README.md" ||
        die "could not update the README's summary from $txt"
    echo "bench.sh: README.md performance summary updated from $txt" >&2
fi
echo "bench.sh: results in $txt, $json and $log" >&2
