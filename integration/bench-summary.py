#!/usr/bin/env python3
"""Turns a proxybench table (the .txt integration/bench.sh writes) into the README's summary;
which proxies were classic peers it reads from the .json written beside the table.

    python3 integration/bench-summary.py RESULTS.txt             # print the Markdown
    python3 integration/bench-summary.py RESULTS.txt --readme README.md

With --readme, the lines between `<!-- proxybench:begin -->` and `<!-- proxybench:end -->` are
replaced, so the README's table is always the script's output, never typed by hand.
"""

import argparse
import json
import os
import re
import sys

BEGIN = "<!-- proxybench:begin -->"
END = "<!-- proxybench:end -->"
SECTION = re.compile(r"^\((\w+'{0,2}\"?)\) (.+?)\s+\[")


def parse(text, classic):
    """(label, title, ours' vs-direct, ours' vs-bestpeer, best peer, Codex's vs-direct or None)
    per test; peak RSS. Only a name in `classic` (the harness's `--peers`) is a peer: Codex
    runs as a second proxy under test (`codex`), so it is never the best peer; a test it could
    not run has no row for it."""
    rows, rss = [], {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = SECTION.match(line)
        if match:
            # Every row ends with `vs direct`, `vs bestpeer` and `errors`.
            table = {}
            for row in lines[i + 2:]:
                if not row.startswith("  "):
                    break
                cells = row.split()
                # A proxy that failed some repetitions ends with `FAILED xN` after `errors`.
                if len(cells) > 2 and cells[-2] == "FAILED":
                    cells = cells[:-2]
                table[cells[0]] = (cells[-3], cells[-2])
            if "ours" not in table:
                continue
            # The best peer's own ratio is 1.000, but so is a proxy under test's that rounds to
            # it (Codex at 4,029 conn/s beside tinyproxy's 4,030): only a classic peer counts.
            peers = [name for name, (_, best) in table.items()
                     if best == "1.000" and name in classic]
            direct, best = table["ours"]
            codex = table.get("codex", (None, None))[0]
            peer = peers[0] if peers else "-"
            rows.append((match.group(1), match.group(2), direct, best, peer, codex))
        if line.startswith("(f) peak RSS"):
            for row in lines[i + 1:]:
                if not row.startswith("  "):
                    break
                # `name value`, then perhaps `notes: ...` (a capability the harness skipped).
                name, value = row.split()[:2]
                rss[name] = value
    return rows, rss


def number(cell):
    """The cell as a positive number, or None (`n/a`, `-`, missing, zero)."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def classic_peers(path):
    """The proxies the harness ran as classic peers, from the .json written beside the table."""
    with open(os.path.splitext(path)[0] + ".json") as f:
        return {name for name, p in json.load(f)["proxies"].items() if p["peer"]}


def markdown(path, text, base):
    rows, rss = parse(text, classic_peers(path))
    first = text.splitlines()[0]
    with_codex = any(row[5] is not None for row in rows)
    head = "| test | vs direct | vs best peer |"
    rule = "|---|---|---|"
    if with_codex:
        head += " Codex vs direct | vs Codex |"
        rule += "---|---|"
    out = [f"`{first.strip()}` — from `{os.path.relpath(path, base)}`:", "", head, rule]
    for label, title, direct, best, peer, codex in rows:
        line = f"| ({label}) {title} | {float(direct):.2f} | {float(best):.2f}× {peer} |"
        if with_codex:
            ratio = number(codex)
            line += (
                f" {ratio:.2f} | {float(direct) / ratio:.2f}× |" if ratio else " n/a | — |"
            )
        out.append(line)
    if rss:
        peers = ", ".join(f"{name} {value}" for name, value in rss.items() if name != "ours")
        out += ["", f"Peak RSS under this load: {rss.get('ours', '?')} MiB ({peers})."]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results")
    parser.add_argument("--readme")
    args = parser.parse_args()
    with open(args.results) as f:
        base = os.path.dirname(os.path.abspath(args.readme)) if args.readme else os.curdir
        summary = markdown(args.results, f.read(), base)
    if not args.readme:
        sys.stdout.write(summary)
        return 0
    with open(args.readme) as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        print(f"{args.readme}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(args.readme, "w") as f:
        f.write(f"{head}{BEGIN}\n{summary}{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
