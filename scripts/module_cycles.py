#!/usr/bin/env python3
"""Fails when a Rust module imports a module that imports it back.

Usage: scripts/module_cycles.py SRC_DIR...   (e.g. apps/server/src)

Each file is a module (lib.rs/main.rs: the crate root; a/mod.rs and a.rs:
`a`; a/b.rs: `a::b`). An edge A -> B is a path A names in a `use`
declaration or in code (`crate::…`, `super::…`, `self::…`), resolved to the
deepest module that exists. A module naming one of its own ancestors (a
child file using its parent's items with `super::`) is a part of that
module, not a dependency, and makes no edge; everything else does, siblings
in one folder included. Any strongly connected component of more than one
module is a cycle: printed, and the exit status is 1.
"""
import re
import sys
from pathlib import Path


def module_of(root: Path, file: Path) -> tuple:
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


# One left-to-right pass, so that `//` inside a string (a URL) is not taken
# for a comment, nor a quote inside a comment for a string: comments go,
# string and char literals become `""`, lifetimes stay.
TOKEN = re.compile(
    r'//[^\n]*'                    # line comment
    r'|/\*(?:.|\n)*?\*/'           # block comment
    r'|b?r(#*)"(?:.|\n)*?"\1'      # raw string
    r'|b?"(?:\\.|[^"\\])*"'        # string
    r"|b?'(?:\\.|[^'\\])'"         # char literal ('"' too)
)


def strip_comments_and_strings(text: str) -> str:
    def keep(m):
        return "" if m.group(0).startswith("/") else '""'

    return TOKEN.sub(keep, text)


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1 : tree.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [p for item in items if item.strip() for p in expand(prefix + item.strip())]


def paths_in(text: str) -> list:
    code = strip_comments_and_strings(text)
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        found += expand(re.sub(r"\s+", "", m.group(1)))
    found += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", code)
    return found


def resolve(path: str, here: tuple, modules: set):
    segs = [s for s in re.sub(r"\s+as\s+\w+$", "", path).split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None  # an external crate, or a name in scope
    best = base if base in modules else None
    for i in range(1, len(segs) + 1):
        candidate = base + tuple(segs[:i])
        if candidate in modules:
            best = candidate
    return best


def cycles(root: Path) -> list:
    files = {module_of(root, f): f for f in sorted(root.rglob("*.rs"))}
    modules = set(files)
    edges = {m: set() for m in modules}
    for here, file in files.items():
        for path in paths_in(file.read_text()):
            target = resolve(path, here, modules)
            if target is None or target == here or here[: len(target)] == target:
                continue  # itself, or one of its ancestors: part of it
            edges[here].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return [(comp, edges) for comp in out]


def name(m: tuple) -> str:
    return "crate" + "".join("::" + p for p in m)


def main() -> int:
    roots = [Path(a) for a in sys.argv[1:]]
    if not roots:
        print(__doc__)
        return 2
    bad = 0
    for root in roots:
        for comp, edges in cycles(root):
            bad += 1
            members = set(comp)
            print(f"{root}: modules that import each other:")
            for m in sorted(comp):
                back = sorted(name(t) for t in edges[m] if t in members)
                print(f"  {name(m)} -> {', '.join(back)}")
    if bad:
        return 1
    print(f"no import cycles among the modules of {', '.join(map(str, roots))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
