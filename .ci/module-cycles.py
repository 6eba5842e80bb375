#!/usr/bin/env python3
"""Fails when the library's top-level modules import each other in a circle.

A top-level module is `src/NAME.rs` together with everything under `src/NAME/`. Module A
depends on module B when A's code (comments, imports made only for doc links and test-only files excluded) names `crate::B`,
either directly (`crate::b::Thing`, `use crate::{b, c}`) or through one of the crate root's
re-exports (`crate::Router` counts as `crate::router`). The dependency graph must be acyclic,
so that each module can be read knowing only the ones below it. Prints every circle found
(as its strongly connected component) and exits 1, or prints the layering and exits 0.

Known circles (KNOWN below) are reported but do not fail: each is a debt with its reason,
to be removed once broken. Any other circle, or a known one that grows, fails.

Usage: python3 .ci/module-cycles.py [path/to/src]
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
SRC = os.path.normpath(SRC)


# None left. (The last, auth <-> error <-> wire, was broken by wire::FrameSigner, which the
# writers sign through, and auth::OpenError, which Keyring::open returns instead of Reject.)
KNOWN: list[set[str]] = []


def is_test_file(path):
    parts = path.split(os.sep)
    name = parts[-1]
    return (
        name in ("tests.rs",)
        or name.endswith("_tests.rs")
        or "tests" in parts[:-1]
    )


def strip(text):
    """Drops comments (doc comments included), string literals and `#[cfg(test)]` modules."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    # Imports only for intra-doc links: `#[cfg(doc)] use ...;`.
    text = re.sub(r"#\[cfg\(doc\)\]\s*use[^;]*;", "", text)
    # An inline test module: `#[cfg(test)] mod tests { ... }` to its matching brace.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def modules():
    mods = {}
    for entry in sorted(os.listdir(SRC)):
        full = os.path.join(SRC, entry)
        if entry in ("lib.rs", "bin"):
            continue
        if entry.endswith(".rs"):
            mods.setdefault(entry[:-3], []).append(full)
        elif os.path.isdir(full):
            for root, _, files in os.walk(full):
                for f in files:
                    if f.endswith(".rs"):
                        mods.setdefault(entry, []).append(os.path.join(root, f))
    return mods


def reexports(mods):
    """Names the crate root re-exports, mapped to the module they come from."""
    text = strip(open(os.path.join(SRC, "lib.rs")).read())
    names = {}
    for m in re.finditer(r"pub\s+use\s+(\w+)::(\{[^}]*\}|\w+)\s*;", text, flags=re.S):
        module, items = m.group(1), m.group(2).strip("{}")
        if module not in mods:
            continue
        for item in items.split(","):
            item = item.strip()
            if item:
                names[item.split(" as ")[-1].strip()] = module
    return names


def deps(mods, names):
    graph = {}
    for mod, files in mods.items():
        found = set()
        for path in files:
            rel = os.path.relpath(path, SRC)
            if is_test_file(rel):
                continue
            text = strip(open(path).read())
            targets = re.findall(r"\bcrate::(\w+)", text)
            for group in re.findall(r"\bcrate::\{([^}]*)\}", text, flags=re.S):
                targets += re.findall(r"(?:^|,)\s*(\w+)", group)
            for t in targets:
                target = t if t in mods else names.get(t)
                if target and target != mod:
                    found.add(target)
        graph[mod] = found
    return graph


def strongly_connected(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main():
    mods = modules()
    graph = deps(mods, reexports(mods))
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    for comp in [c for c in circles if set(c) in KNOWN]:
        print("known import circle (a debt, see KNOWN): " + ", ".join(comp))
    circles = [c for c in circles if set(c) not in KNOWN]
    if circles:
        for comp in circles:
            print("import circle between modules: " + ", ".join(comp))
            for a in comp:
                inside = sorted(graph[a] & set(comp))
                print(f"  {a} -> {', '.join(inside)}")
        return 1
    # Tarjan's algorithm emits components in reverse topological order: dependencies first.
    for comp in strongly_connected(graph):
        for mod in comp:
            below = ", ".join(sorted(graph[mod])) or "-"
            print(f"{mod:14} uses {below}")
    print("no new import circle between the library's modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
