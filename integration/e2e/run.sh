#!/usr/bin/env bash
# The end-to-end suite from a fresh clone: installs the real tools it drives where missing
# (apt-get), builds the release binary, then runs integration/e2e/e2e.py on loopback only.
#
#   bash integration/e2e/run.sh            # every tool case
#   bash integration/e2e/run.sh --fast     # curl (HTTP, CONNECT, SOCKS5), urllib, git: CI's subset
#   bash integration/e2e/run.sh -k pip     # one case
#
# Extra arguments go to e2e.py; `--bin PATH` tests another build instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# command -> Debian package
declare -A tools=(
    [curl]=curl [git]=git [openssl]=openssl [python3]=python3 [node]=nodejs
)
missing=()
for tool in "${!tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${tools[$tool]}")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
python3 -c 'import requests' >/dev/null 2>&1 || missing+=(python3-requests)
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: missing packages: ${missing[*]} (run as root, or install them)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

args=("$@")
if [[ " $* " != *" --bin "* ]]; then
    # The release binary as shipped (the alias in .cargo/config.toml).
    cargo --quiet build-static
    args+=(--bin target/release/egress-proxy)
fi
exec python3 integration/e2e/e2e.py "${args[@]}"
