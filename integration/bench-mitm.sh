#!/usr/bin/env bash
# HTTPS inspection beside mitmproxy, in one run: keep-alive HTTPS GETs of 1 KiB through an
# intercepting proxy (one tunnel, one TLS session each side, then request after request), and
# new connections (every GET its own CONNECT and two TLS handshakes), as ratios to direct TLS
# to the same origin. squid would be the classic peer, but Debian's squid is built with
# GnuTLS and has no ssl-bump; mitmproxy (PyPI) is used when `mitmdump` is found (on PATH,
# or in $MITMDUMP), else its column is left out with a message.
#
#   bash integration/bench-mitm.sh [BIN] [--quick]
#
# Everything is on loopback: nginx serves TLS (a test CA made here with openssl) on
# 127.0.0.1, and the proxies are told to trust that CA for the origin. Temporary files live
# in one directory, removed at exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/../target/release/egress-proxy"
[[ $# -gt 0 && "$1" != --* ]] && bin="$1"
keepalive=4000
fresh=600
reps=3
if [[ " $* " == *" --quick "* ]]; then
    keepalive=1000
    fresh=150
    reps=1
fi
[[ -x "$bin" ]] || { echo "bench-mitm.sh: no binary at $bin" >&2; exit 2; }
for tool in nginx openssl curl; do
    command -v "$tool" >/dev/null || { echo "bench-mitm.sh: $tool is not installed" >&2; exit 2; }
done
mitmdump="${MITMDUMP:-$(command -v mitmdump || true)}"

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The origin's CA and certificate (IP SAN: the proxies connect to 127.0.0.1).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench origin CA" -keyout "$tmp/origin-ca.key" -out "$tmp/origin-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tmp/origin.key" -out "$tmp/origin.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$tmp/san.ext"
openssl x509 -req -in "$tmp/origin.csr" -CA "$tmp/origin-ca.pem" -CAkey "$tmp/origin-ca.key" \
    -CAcreateserial -days 2 -extfile "$tmp/san.ext" -out "$tmp/origin.pem" 2>/dev/null

origin="$(free_port)"
head -c 1024 /dev/zero | tr '\0' x >"$tmp/1k"
cat >"$tmp/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$origin ssl;
        ssl_certificate $tmp/origin.pem;
        ssl_certificate_key $tmp/origin.key;
        location / { root $tmp; try_files /1k =404; }
    }
}
EOF
setsid nginx -c "$tmp/nginx.conf" -p "$tmp" &
pids+=($!)

ours="$(free_port)"
mkdir -p "$tmp/data"
cat >"$tmp/ours.toml" <<EOF
mode = "limited"
allowed_domains = ["127.0.0.1"]
allow_local_binding = true
enable_socks5 = false
proxy_url = "http://127.0.0.1:$ours"
admin_url = "http://127.0.0.1:$(free_port)"

[mitm]
upstream_ca = "$tmp/origin-ca.pem"

[log]
audit = "$tmp/audit.log"
EOF
XDG_DATA_HOME="$tmp/data" "$bin" ca show --config "$tmp/ours.toml" >/dev/null
ours_ca="$(XDG_DATA_HOME="$tmp/data" "$bin" ca path --config "$tmp/ours.toml" | head -1)"
XDG_DATA_HOME="$tmp/data" setsid "$bin" serve --config "$tmp/ours.toml" 2>"$tmp/ours.err" &
pids+=($!)

peer=""
if [[ -n "$mitmdump" ]]; then
    peer="$(free_port)"
    setsid "$mitmdump" -q --listen-host 127.0.0.1 -p "$peer" --set confdir="$tmp/mitm" \
        --set ssl_verify_upstream_trusted_ca="$tmp/origin-ca.pem" >"$tmp/mitm.log" 2>&1 &
    pids+=($!)
else
    echo "bench-mitm.sh: mitmdump not found (pip install mitmproxy, or MITMDUMP=path); its column is left out" >&2
fi

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-mitm.sh: nothing listens on $1" >&2
    exit 1
}
wait_port "$origin"
wait_port "$ours"
[[ -n "$peer" ]] && wait_port "$peer"
peer_ca="$tmp/mitm/mitmproxy-ca-cert.pem"
if [[ -n "$peer" ]]; then
    for _ in $(seq 100); do [[ -s "$peer_ca" ]] && break; sleep 0.1; done
fi

url="https://127.0.0.1:$origin"
# Requests per second of one curl doing $2 GETs: sequential on one kept connection, or
# (with "fresh") eight at a time, each on a new connection.
rate() {
    local kind="$1" count="$2" ca="$3"
    shift 3
    local extra=(--http1.1 -s --no-progress-meter -o /dev/null --cacert "$ca" "$@")
    if [[ "$kind" == fresh ]]; then
        extra+=(-Z --parallel-max 8 -H "Connection: close")
    fi
    local start end
    start="$(date +%s.%N)"
    curl "${extra[@]}" "$url/[1-$count]" || { echo "bench-mitm.sh: curl failed ($kind $*)" >&2; exit 1; }
    end="$(date +%s.%N)"
    python3 -c "print(round($count / ($end - $start)))"
}
best() {
    local top=0 r
    for _ in $(seq "$reps"); do
        r="$(rate "$@")"
        ((r > top)) && top="$r"
    done
    echo "$top"
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ours_pid="$(pgrep -f "serve --config $tmp/ours.toml" | head -1)"

printf '%-44s %10s %22s %22s\n' "test (best of $reps, req/s)" direct egress-proxy mitmproxy
for kind in keepalive fresh; do
    count=$keepalive
    label="keep-alive HTTPS GET 1 KiB ($count in a row)"
    if [[ "$kind" == fresh ]]; then
        count=$fresh
        label="new connection per GET ($count, 8 at once)"
    fi
    direct="$(best "$kind" "$count" "$tmp/origin-ca.pem")"
    before="$(cpu "$ours_pid")"
    ours_rate="$(best "$kind" "$count" "$ours_ca" -x "http://127.0.0.1:$ours")"
    after="$(cpu "$ours_pid")"
    ours_cell="$ours_rate ($(ratio "$ours_rate" "$direct"))"
    peer_cell="-"
    if [[ -n "$peer" ]]; then
        peer_rate="$(best "$kind" "$count" "$peer_ca" -x "http://127.0.0.1:$peer")"
        peer_cell="$peer_rate ($(ratio "$peer_rate" "$direct"))"
        ours_cell="$ours_cell $(ratio "$ours_rate" "$peer_rate")x"
    fi
    ticks=$((after - before))
    us="$(python3 -c "print(round($ticks * 10000 / ($count * $reps)))")"
    printf '%-44s %10s %22s %22s   proxy CPU %s us/req\n' "$label" "$direct" "$ours_cell" "$peer_cell" "$us"
done
echo "(ratios in parentheses are to direct; Nx is egress-proxy / mitmproxy)"
intercepted="$(grep -c '"event":"request"' "$tmp/audit.log" || true)"
echo "audit request lines written by egress-proxy: $intercepted"
