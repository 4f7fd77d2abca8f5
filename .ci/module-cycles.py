#!/usr/bin/env python3
"""Fails when the proxy crate's top-level modules depend on each other in a cycle.

Reads every `crate::<module>` path in src/ (comments and `#[cfg(test)] mod tests` left out)
and prints the strongly connected components of more than one module.
"""
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(__file__), "..", "src")
deps = {}
for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
    rel = os.path.relpath(path, root)
    top = rel.split(os.sep)[0].removesuffix(".rs")
    if top in ("main", "lib") or rel.endswith("tests.rs") or f"{os.sep}tests{os.sep}" in rel:
        continue
    text = open(path).read()
    text = text.split("#[cfg(test)]\nmod tests")[0]
    code = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
    deps.setdefault(top, set()).update(set(re.findall(r"crate::([a-z_0-9]+)", code)) - {top})
for module in deps:
    deps[module] &= deps.keys()

index, low, stack, on, cycles = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in deps[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))


for module in sorted(deps):
    if module not in index:
        visit(module)
for cycle in cycles:
    print("module cycle:", " <-> ".join(cycle), file=sys.stderr)
sys.exit(1 if cycles else 0)
