#!/usr/bin/env python3
"""What the web app's WebAssembly is made of (issue 13): code bytes per
crate, from the function names of the wasm cargo-leptos compiles before
wasm-bindgen and wasm-opt strip them, plus the size of every other section.

Usage: scripts/wasm_size.py [WASM]
  (default: $CARGO_TARGET_DIR/front/wasm32-unknown-unknown/wasm-release/web.wasm,
  left by `make build`). `make wasm-size` runs it.

Shares are of the code section before wasm-opt, which shrinks every crate
(the bundle served is about a third of this); the ranking is what matters.
"""
import collections
import os
import re
import sys


def leb(b, i):
    result = shift = 0
    while True:
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return result, i


def sections(data):
    i = 8
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        yield sid, i, size
        i += size


def imported_functions(data, start):
    n, j = leb(data, start)
    count = 0
    for _ in range(n):
        for _ in range(2):  # module, field
            length, j = leb(data, j)
            j += length
        kind = data[j]
        j += 1
        if kind == 0:  # function: type index
            _, j = leb(data, j)
            count += 1
        elif kind in (1, 2):  # table (elem type first) or memory: limits
            j += kind == 1
            flags, j = leb(data, j)
            _, j = leb(data, j)
            if flags & 1:
                _, j = leb(data, j)
        elif kind == 3:  # global: type, mutability
            j += 2
    return count


def function_names(data, start, size):
    length, j = leb(data, start)
    if data[j : j + length] != b"name":
        return {}
    j += length
    names = {}
    end = start + size
    while j < end:
        sub = data[j]
        sub_size, j = leb(data, j + 1)
        if sub == 1:
            n, k = leb(data, j)
            for _ in range(n):
                index, k = leb(data, k)
                length, k = leb(data, k)
                names[index] = data[k : k + length].decode(errors="replace")
                k += length
        j += sub_size
    return names


def crate_of(name):
    """The crate a mangled symbol belongs to (legacy `_ZN` or v0 `_R`)."""
    if name.startswith("_ZN"):
        m = re.match(r"_ZN(\d+)", name)
        seg = name[m.end() : m.end() + int(m.group(1))]
        if seg.startswith("_$LT$"):  # <T as Trait>::f: the type's crate
            seg = re.sub(r"^(impl\$u20\$|dyn\$u20\$|\$RF\$|\$u5b\$)+", "", seg[5:])
            seg = seg.split("..")[0].split("$")[0]
        return seg or "(generic)"
    if name.startswith("_R"):
        m = re.search(r"C[s]?[0-9A-Za-z]*_(\d+)([a-z_][a-z0-9_]*)", name)
        return m.group(2)[: int(m.group(1))] if m else "(v0)"
    if name.startswith("__wbindgen_describe"):
        return "(wasm-bindgen descriptors)"
    return name.split("::")[0][:30] or "(unnamed)"


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        target, "front/wasm32-unknown-unknown/wasm-release/web.wasm")
    data = open(path, "rb").read()
    imports, names, bodies, other = 0, {}, [], {}
    ids = {1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
           7: "export", 9: "element", 11: "data", 12: "datacount"}
    for sid, start, size in sections(data):
        if sid == 2:
            imports = imported_functions(data, start)
        if sid == 10:
            n, j = leb(data, start)
            for _ in range(n):
                body, k = leb(data, j)
                bodies.append(body + k - j)
                j = k + body
        elif sid == 0:
            names.update(function_names(data, start, size))
        if sid not in (0, 10):
            other[ids.get(sid, str(sid))] = size
    total = sum(bodies)
    by_crate = collections.Counter()
    for index, size in enumerate(bodies):
        by_crate[crate_of(names.get(index + imports, ""))] += size
    print(f"{path}: {len(data)} bytes; code {total} bytes in {len(bodies)} functions")
    for crate, size in by_crate.most_common(20):
        print(f"{size:9,d} {100 * size / total:5.1f}%  {crate}")
    print("other sections:", ", ".join(f"{k} {v:,d}" for k, v in other.items()))


if __name__ == "__main__":
    main()
