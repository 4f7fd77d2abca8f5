#!/usr/bin/env bash
# `run --isolate` against plain `run`: a CONNECT download through the proxy from inside the
# command's network namespace, as a ratio to the same download without --isolate and to a
# direct one (target: isolated >= 0.9 of non-isolated), and the start-up cost of
# `run --isolate -- true` (target: < 30 ms; hyperfine when installed).
#
#   bash integration/bench-isolate.sh [BIN] [--quick]
#
# Everything is on loopback: the origin is a Python sendfile() server of a sparse file in a
# temporary directory (removed at exit), allowed by its IP literal.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-$here/../target/release/egress-proxy}"
size_mib=2048
reps=3
if [[ " $* " == *" --quick "* ]]; then
    size_mib=256
    reps=1
fi
[[ -x "$bin" ]] || { echo "bench-isolate.sh: no binary at $bin" >&2; exit 2; }

tmp="$(mktemp -d)"
origin_pid=""
cleanup() {
    [[ -n "$origin_pid" ]] && kill "$origin_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
truncate -s "${size_mib}M" "$tmp/blob"
python3 - "$tmp/blob" >"$tmp/port" <<'PY' &
import os, socket, sys, threading
blob = sys.argv[1]
size = os.path.getsize(blob)
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
def serve(conn):
    with conn, open(blob, "rb") as f:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        conn.sendfile(f)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
origin_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
port="$(cat "$tmp/port")"
url="http://127.0.0.1:$port/blob"

# Best of $reps, in MiB/s; `sh -c` so curl reads the proxy variables of the run it is in.
best() {
    local top=0 speed
    for _ in $(seq "$reps"); do
        speed="$("$@")"
        speed="${speed%.*}"
        ((speed > top)) && top="$speed"
    done
    echo $((top / 1048576))
}
curl_direct() { curl -sS --noproxy '*' -o /dev/null -w '%{speed_download}' "$url"; }
# --noproxy '': under --isolate NO_PROXY names 127.0.0.1, which must still go through the proxy.
through() {
    "$bin" run -q --allow 127.0.0.1 "$@" -- sh -c \
        "curl -sS --noproxy '' --proxytunnel -x \"\$HTTPS_PROXY\" -o /dev/null -w '%{speed_download}' '$url'"
}
direct="$(best curl_direct)"
plain="$(best through)"
isolated="$(best through --isolate)"
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "run --isolate CONNECT download (${size_mib} MiB, best of $reps): direct ${direct} MiB/s," \
    "run ${plain} MiB/s ($(ratio "$plain" "$direct") of direct)," \
    "run --isolate ${isolated} MiB/s ($(ratio "$isolated" "$direct") of direct," \
    "$(ratio "$isolated" "$plain") of run)"

if command -v hyperfine >/dev/null 2>&1; then
    hyperfine -N --warmup 10 --runs 100 --export-json "$tmp/start.json" \
        "$bin run --allow x.test -- true" "$bin run --isolate --allow x.test -- true" >/dev/null
    python3 - "$tmp/start.json" <<'PY'
import json, sys
plain, isolated = (r["mean"] * 1000 for r in json.load(open(sys.argv[1]))["results"])
print(f"run --isolate start-up (hyperfine, `-- true`): run {plain:.1f} ms, run --isolate {isolated:.1f} ms (+{isolated - plain:.1f} ms)")
PY
else
    echo "bench-isolate.sh: hyperfine missing (apt package: hyperfine); start-up not measured" >&2
fi
