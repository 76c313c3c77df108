#!/usr/bin/env python3
"""Reports import cycles between the modules (source files) of each workspace crate.

Usage: python3 scripts/module_cycles.py [-v] [SRC_DIR...]
(from the repository root; default: every crate of the workspace; exit 1 if a cycle exists)

A module is one `.rs` file under a crate's `src/` (`foo.rs` or `foo/mod.rs` is module `foo`). Module
A depends on module B when A's code (comments and string literals stripped) names a path into B:
`use crate::b::…`, `use super::…`, `use self::child::…`, a child name in a `use`, or an inline
`crate::b::Item` / `super::Item`. A path that ends at an item re-exported by a facade
(`pub use child::Item` in a `mod.rs`/`lib.rs`) resolves to the module that defines the item, so a
parent that only re-exports its children is not a dependency. A parent's own re-export of a
descendant (`pub use child::Item`) is its interface, not a dependency; everything else counts,
including `pub use` of a module elsewhere in the crate. Cycles are the strongly connected
components with more than one module, found among the files and again among the subtrees at
each depth (so `format::file -> model -> format::records` is a cycle between `format` and
`model`).

`-v` prints every dependency edge.
"""

import re
import sys
from pathlib import Path

CRATES = ["src", "crates/vimvq-rt/src", "crates/vimvq-pack/src", "crates/vimvq-capi/src"]


def strip(code: str) -> str:
    """Removes comments, string and char literals (keeps line structure)."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            i = n if j < 0 else j
        elif code.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', code[i:]) and not (i and (code[i - 1].isalnum() or code[i - 1] == "_")):
            m = re.match(r'r(#*)"', code[i:])
            end = code.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", code[i:]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", code[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree: str):
    """Expands a use tree (`a::{b, c::{d, self}}`) into full paths (lists of segments)."""
    tree = re.sub(r"\s+", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        if cur:
            parts.append(cur)
        return parts

    def rec(prefix, s):
        s = re.sub(r"\bas\w+$", "", s) if "as" not in s else re.sub(r"as[A-Za-z_]\w*$", "", s)
        if "{" in s:
            head, body = s.split("{", 1)
            body = body[: body.rfind("}")]
            head = [p for p in head.split("::") if p]
            for part in split_top(body):
                yield from rec(prefix + head, part)
        else:
            segs = [p for p in s.split("::") if p]
            if segs == ["self"]:
                yield prefix
            else:
                yield prefix + segs

    yield from rec([], tree)


def inline_mods(code):
    """`(name, start, end)` of every inline `mod name { … }` block."""
    out = []
    for mt in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
        depth, i = 1, mt.end()
        while i < len(code) and depth:
            depth += code[i] == "{"
            depth -= code[i] == "}"
            i += 1
        out.append((mt.group(1), mt.start(), i))
    return out


def strip_inline(path, inner):
    """A path written inside inline modules `inner`, as seen from the enclosing file module
    (`None` if it names something inside the inline module itself)."""
    path = list(path)
    for _ in inner:
        if path and path[0] == "super":
            path = path[1:]
        elif path and path[0] == "self":
            return None
    return path or None


class Crate:
    def __init__(self, root: Path):
        self.root = root
        self.modules = {}  # module path tuple -> file
        for f in sorted(root.rglob("*.rs")):
            rel = f.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            self.modules[tuple(parts)] = f
        self.code = {m: strip(f.read_text()) for m, f in self.modules.items()}
        self.inline = {m: inline_mods(c) for m, c in self.code.items()}
        self.reexports = {m: self._reexports(m) for m in self.modules}

    def _inline(self, m, pos):
        """Names of the inline `mod x { … }` blocks around position `pos` of module `m`."""
        return [n for n, a, b in self.inline[m] if a <= pos < b]

    def _uses(self, m):
        for mt in re.finditer(r"\b(pub(\([^)]*\))?\s+)?use\s+([^;]+);", self.code[m]):
            inner = self._inline(m, mt.start())
            for path in expand_use(mt.group(3)):
                yield bool(mt.group(1)) and not inner, strip_inline(path, inner)

    def absolute(self, m, path):
        """Absolute module path of a `use`/inline path written in module `m`, or None if external."""
        if not path:
            return None
        head = path[0]
        if head in ("self", "super") and len(path) == 1:
            return None
        if head == "crate":
            return list(path[1:])
        if head == "self":
            return list(m) + list(path[1:])
        if head == "super":
            base, rest = list(m), list(path)
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            return base + rest
        if tuple(list(m) + [head]) in self.modules:  # a child module
            return list(m) + list(path)
        if (head,) in self.modules and m == ():
            return list(path)
        return None

    def _reexports(self, m):
        """Item name -> absolute path, for `pub use` of descendants in module `m`."""
        out = {}
        for public, path in self._uses(m):
            if not public:
                continue
            a = self.absolute(m, path)
            if a and tuple(a[: len(m)]) == m and len(a) > len(m):
                out[a[-1]] = a
        return out

    def resolve(self, a, depth=0):
        """The module that defines what absolute path `a` names."""
        i = 0
        while i < len(a) and tuple(a[: i + 1]) in self.modules:
            i += 1
        mod = tuple(a[:i])
        if i < len(a) and depth < 8:
            target = self.reexports[mod].get(a[i])
            if target and tuple(target[:-1]) != mod:
                return self.resolve(target + a[i + 1 :], depth + 1)
        return mod

    def edges(self):
        deps = {m: set() for m in self.modules}
        for m in self.modules:
            paths = []
            for public, path in self._uses(m):
                a = self.absolute(m, path)
                if a is None:
                    continue
                if public and tuple(a[: len(m)]) == m and len(a) > len(m):
                    continue  # facade re-export of a descendant
                paths.append(a)
            code = re.sub(r"\b(pub(\([^)]*\))?\s+)?use\s+[^;]+;", lambda u: " " * len(u.group(0)), self.code[m])
            for mt in re.finditer(r"(?<![\w:])((?:\w+)(?:::\w+)+)", code):
                path = strip_inline(mt.group(1).split("::"), self._inline(m, mt.start()))
                a = self.absolute(m, path)
                if a is not None:
                    paths.append(a)
            for a in paths:
                t = self.resolve(a)
                if t != m and t in self.modules:
                    deps[m].add(t)
        return deps


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def project(deps, level):
    """The dependency graph between modules cut at `level` path segments (a module deeper than
    that stands for its whole subtree); `None`: every file on its own."""
    if level is None:
        return deps
    cut = lambda m: m[:level]
    graph = {}
    for m, ts in deps.items():
        graph.setdefault(cut(m), set())
        for t in ts:
            a, b = cut(m), cut(t)
            # A module and its own ancestor are compared at the file level only.
            if a != b and a[: len(b)] != b and b[: len(a)] != a:
                graph[a].add(b)
            graph.setdefault(b, set())
    return graph


def name(m):
    return "crate" if not m else "::".join(m)


def main():
    verbose = "-v" in sys.argv
    roots = [a for a in sys.argv[1:] if a != "-v"] or CRATES
    found = 0
    for root in roots:
        crate = Crate(Path(root))
        deps = crate.edges()
        if verbose:
            for m in sorted(deps):
                for t in sorted(deps[m]):
                    print(f"{root}: {name(m)} -> {name(t)}")
        seen = set()
        depth = max(len(m) for m in deps)
        for level in [None] + list(range(depth, 0, -1)):
            graph = project(deps, level)
            for comp in sccs(graph):
                key = frozenset(comp)
                if len(comp) < 2 or key in seen:
                    continue
                seen.add(key)
                found += 1
                members = set(comp)
                print(f"{root}: cycle between {', '.join(sorted(name(m) for m in comp))}")
                for m in sorted(comp):
                    for t in sorted(graph[m] & members):
                        print(f"    {name(m)} -> {name(t)}")
    if not found:
        print("no module cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
