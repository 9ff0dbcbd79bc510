#!/usr/bin/env python3
"""Fails when a Rust module imports a module that imports it (ARCHITECTURE.md, "Dependency
direction").

The rule, for every crate's src/ (each library and binary root, tests included):

- A module may use its ancestors' and its descendants' items: a parent declares its
  children and re-exports from them, children add `impl` blocks to their parent's types
  (`use super::Service`). Those uses are not arrows.
- Any other use is an arrow between the two *siblings* under the modules' nearest common
  ancestor: `crate::service::converge` using `crate::metrics::PoolGauges` is the arrow
  `service -> metrics` (under the crate root); `service::delivery` using
  `super::converge::Pass` is `delivery -> converge` (under `service`).
- At every level, the arrows must not form a cycle.

Uses are read from `use` items and from `crate::`, `super::` and `self::` paths anywhere in
the code (comments and string literals are not code); a path through a re-export (`pub use`
in lib.rs, say) counts for the module that defines the item. Method calls on a type whose
`impl` blocks sit in several child modules are not paths, and are not seen.

Usage: check_module_cycles.py [--arrows] [CRATE_DIR ...]
  (default: every crate of the repository; --arrows prints every arrow found)
Exit status 0: no cycle; 1: cycles (each printed with the lines that make it); 2: bad input.
"""

import os
import re
import sys

SKIP_DIRS = {"target", ".git", ".tools", ".venv", "node_modules"}
ITEM_KINDS = {"fn", "struct", "enum", "trait", "const", "static", "type", "union", "mod"}
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|\S")


def strip_code(text):
    """The text with comments and string/char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)

    def blank(chunk):
        out.append("".join(c if c == "\n" else " " for c in chunk))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(text[i:j])
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(text[i:j])
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:])) and not (
            i and (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            blank(text[i:j])
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(text[i : j + 1])
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), else a lifetime or label.
            if text.startswith("\\", i + 1):
                j = text.find("'", i + 2)
                j = n if j < 0 else j
                blank(text[i : j + 1])
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                blank(text[i : i + 3])
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokens(text):
    """(token, line) pairs of the code."""
    line, last = 1, 0
    for m in TOKEN.finditer(strip_code(text)):
        line += text.count("\n", last, m.start())
        last = m.start()
        yield m.group(), line


class Module:
    def __init__(self, path, file):
        self.path = path  # tuple of names below the crate root
        self.file = file
        self.children = set()
        self.bindings = {}  # name -> (absolute-ish path spec, line) from `use`
        self.globs = []  # path specs of `use ...::*`
        self.items = set()  # names defined here
        self.uses = []  # (path spec, line): every path that leaves this module


def parse_use_tree(toks, i, prefix):
    """Parses a use tree at toks[i]; returns (leaves, next index). A leaf is
    (segments, bound name or None for a glob)."""
    leaves = []
    segs = list(prefix)
    while i < len(toks):
        t = toks[i][0]
        if t == "{":
            i += 1
            while toks[i][0] != "}":
                sub, i = parse_use_tree(toks, i, segs)
                leaves += sub
                if toks[i][0] == ",":
                    i += 1
            return leaves, i + 1
        if t == "*":
            leaves.append((segs, None))
            return leaves, i + 1
        if t == "::":
            i += 1
            continue
        segs = segs + [t]
        i += 1
        if i < len(toks) and toks[i][0] == "::":
            continue
        name = t
        if t == "self" and len(segs) > 1:
            segs = segs[:-1]
            name = segs[-1]
        if i + 1 < len(toks) and toks[i][0] == "as":
            name, i = toks[i + 1][0], i + 2
        leaves.append((segs, name))
        return leaves, i
    return leaves, i


def read_crate(root_file):
    """Reads the module tree under a crate root file: {path: Module}."""
    modules = {}

    def read_file(path, file, dir_for_children):
        with open(file, encoding="utf-8") as f:
            text = f.read()
        toks = list(tokens(text))
        # (module path, brace depth at which its inline body closes)
        stack = [(path, -1)]
        modules.setdefault(path, Module(path, file))
        depth = 0
        i = 0
        while i < len(toks):
            t, line = toks[i]
            cur = stack[-1][0]
            mod = modules[cur]
            prev = toks[i - 1][0] if i else ""
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if depth == stack[-1][1]:
                    stack.pop()
            elif t == "mod" and i + 2 < len(toks) and prev not in ("::",):
                name, nxt = toks[i + 1][0], toks[i + 2][0]
                child = cur + (name,)
                mod.children.add(name)
                mod.items.add(name)
                if nxt == "{":
                    modules.setdefault(child, Module(child, file))
                    stack.append((child, depth))
                    depth += 1
                    i += 3
                    continue
                if nxt == ";" and len(stack) == 1:
                    base = os.path.join(dir_for_children, name)
                    for cand, sub in ((base + ".rs", base), (os.path.join(base, "mod.rs"), base)):
                        if os.path.exists(cand):
                            read_file(child, cand, sub)
                            break
                    else:
                        raise SystemExit(f"{file}:{line}: no file for `mod {name};`")
            elif t in ITEM_KINDS and i + 1 < len(toks) and prev != "::":
                if re.match(r"[A-Za-z_]", toks[i + 1][0]):
                    mod.items.add(toks[i + 1][0])
            elif t == "use" and prev != "::":
                j = i + 1
                leaves, j = parse_use_tree(toks, j, [])
                for segs, name in leaves:
                    if not segs:
                        continue
                    spec = (cur, tuple(segs))
                    mod.uses.append((spec, line))
                    if name is None:
                        mod.globs.append(spec)
                    else:
                        mod.bindings[name] = spec
                i = j
                continue
            elif t in ("crate", "super", "self") and prev not in ("::", "$", "."):
                if i + 1 < len(toks) and toks[i + 1][0] == "::":
                    segs, j = [t], i + 1
                    while j + 1 < len(toks) and toks[j][0] == "::" and re.match(
                        r"[A-Za-z_]", toks[j + 1][0]
                    ):
                        segs.append(toks[j + 1][0])
                        j += 2
                    mod.uses.append(((cur, tuple(segs)), line))
                    i = j
                    continue
            i += 1

    base = os.path.dirname(root_file)
    is_dir_root = os.path.basename(root_file) in ("lib.rs", "main.rs", "mod.rs")
    sub = base if is_dir_root else os.path.splitext(root_file)[0]
    read_file((), root_file, sub)
    return modules


def _children(modules, path):
    mod = modules.get(path)
    return mod.children if mod else ()


def resolve(modules, spec, seen=None):
    """The module that defines what a path names (following `use` re-exports), or None when
    the path leaves the crate's modules."""
    cur, segs = spec
    seen = seen or set()
    if spec in seen:
        return None
    seen = seen | {spec}
    m = cur
    rest = list(segs)
    if rest[0] not in ("crate", "super", "self") and rest[0] not in _children(modules, m):
        return None  # another crate (std, a dependency)
    while rest and rest[0] in ("crate", "super", "self"):
        head = rest.pop(0)
        if head == "crate":
            m = ()
        elif head == "super":
            if not m:
                return None
            m = m[:-1]
    while rest and rest[0] in _children(modules, m):
        m = m + (rest.pop(0),)
    if not rest:
        return m
    mod = modules.get(m)
    if mod is None:
        return None
    name = rest[0]
    if name in mod.bindings:
        target = mod.bindings[name]
        return resolve(modules, (target[0], target[1] + tuple(rest[1:])), seen)
    if name not in mod.items:
        for g in mod.globs:
            gm = resolve(modules, g, seen)
            gmod = modules.get(gm) if gm is not None else None
            if gmod and (name in gmod.items or name in gmod.bindings):
                return resolve(modules, (gm, tuple(rest)), seen)
    return m


def arrows(modules):
    """{(parent, a, b): [(file, line, path text)]}: a -> b between siblings a, b of parent."""
    out = {}
    for mod in modules.values():
        for spec, line in mod.uses:
            target = resolve(modules, spec)
            if target is None:
                continue
            src = mod.path
            k = 0
            while k < min(len(src), len(target)) and src[k] == target[k]:
                k += 1
            if k == len(src) or k == len(target):
                continue  # one contains the other
            key = (src[:k], src[k], target[k])
            out.setdefault(key, []).append((mod.file, line, "::".join(spec[1])))
    return out


def cycles(edges):
    """Strongly connected components of more than one node: lists of (parent, nodes)."""
    by_parent = {}
    for parent, a, b in edges:
        by_parent.setdefault(parent, {}).setdefault(a, set()).add(b)
    found = []
    for parent, graph in sorted(by_parent.items()):
        index, low, on, stack, counter = {}, {}, set(), [], [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(graph.get(v, ())):
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
                    found.append((parent, sorted(comp)))

        for v in sorted(graph):
            if v not in index:
                visit(v)
    return found


def crate_roots(crate_dir):
    src = os.path.join(crate_dir, "src")
    roots = [os.path.join(src, f) for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))]
    bin_dir = os.path.join(src, "bin")
    if os.path.isdir(bin_dir):
        for f in sorted(os.listdir(bin_dir)):
            p = os.path.join(bin_dir, f)
            if f.endswith(".rs"):
                roots.append(p)
            elif os.path.exists(os.path.join(p, "main.rs")):
                roots.append(os.path.join(p, "main.rs"))
    return roots


def find_crates(top):
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            found.append(dirpath)
    return found


def check(crate_dirs, out=sys.stdout, show_arrows=False):
    """Prints what it found (with show_arrows, every arrow); returns the number of cycles."""
    n_modules = n_arrows = n_cycles = 0
    for crate in crate_dirs:
        for root in crate_roots(crate):
            modules = read_crate(root)
            edges = arrows(modules)
            n_modules += len(modules)
            n_arrows += len(edges)
            if show_arrows:
                for (p, a, b), sites in sorted(edges.items()):
                    print(f"{root}: {'::'.join(('crate',) + p)}: {a} -> {b}", file=out)
            for parent, comp in cycles(edges):
                n_cycles += 1
                where = "::".join(("crate",) + parent)
                print(f"cycle in {root} under {where}: {', '.join(comp)} import each other", file=out)
                members = set(comp)
                for (p, a, b), sites in sorted(edges.items()):
                    if p == parent and a in members and b in members:
                        file, line, text = sites[0]
                        more = f" (and {len(sites) - 1} more)" if len(sites) > 1 else ""
                        print(f"  {a} -> {b}: {file}:{line} {text}{more}", file=out)
    print(
        f"module cycles: {len(crate_dirs)} crates, {n_modules} modules, "
        f"{n_arrows} arrows between sibling modules, {n_cycles} cycles",
        file=out,
    )
    return n_cycles


def main(argv):
    show_arrows = "--arrows" in argv
    argv = [a for a in argv if a != "--arrows"]
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = argv or find_crates(top)
    for c in crates:
        if not crate_roots(c):
            print(f"{c}: no src/lib.rs, src/main.rs or src/bin/", file=sys.stderr)
            return 2
    return 1 if check(crates, show_arrows=show_arrows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
