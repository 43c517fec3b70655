#!/usr/bin/env python3
"""Check that a Rust library crate's modules have no import cycles (issue 14, item 2).

Usage:
    python3 integration/check_module_cycles.py [--lib src/lib.rs ...] [--dot FILE] [--quiet]
    python3 integration/check_module_cycles.py --self-test

Exit status: 0 no cycle, 1 at least one cycle (or a failing self-test), 2 usage error.

What it checks (the rules; read them before trusting a verdict)
---------------------------------------------------------------
Modules: every module reachable from the crate root (lib.rs) through `mod x;` (any
visibility), looked up as `x.rs` or `x/mod.rs` next to / below the declaring file as rustc
does (`#[path = "..."]` honoured), plus inline `mod x { ... }` blocks, which are children of
the module they are written in. Test code is not part of the graph: inline `mod tests {...}`,
anything under `#[cfg(test)]` (or `#[cfg(all(test, ...))]`), and files starting with
`#![cfg(test)]`. Code under other cfgs (features, platforms) counts.

Edges: module A -> module B when text in A's production code names B:
  * a `use` leaf (`use crate::a::b::X`, grouped `use crate::{a::x, b::{y, z}}`, `pub use`,
    `use super::...`, `use self::...`, and `use child::...` relative to the module), and
  * a path expression starting with `crate::`, `super::` or `self::` (types, calls, patterns).
  Comments (incl. doc comments), string literals (incl. raw and byte strings) and char
  literals are blanked first, so `[crate::x]` in a doc comment is not an edge.
  The target is the deepest module the path names: segments are followed while they name a
  module (`crate::orchestrator::backup::StoreTarget` -> `orchestrator::backup`). If the next
  segment is a name that the reached module imports or re-exports with `use`
  (`pub use metadata::Checksums` in artifact.rs), the edge goes to where that name comes from
  (`crate::artifact::Checksums` -> `artifact::metadata`), because that is the code depended on.
  A `mod child;` declaration is NOT an edge (declaring is not using).

Which edges count:
  * A module using its own descendant (a parent using its child, `orchestrator` ->
    `orchestrator::backup`) is fine and DROPPED (issue 14: "a parent using its own child is
    fine"). Consequence: `orchestrator` using `backup` while `backup` uses `super::RunContext`
    is not a cycle; `--keep-parent-edges` shows what this rule hides.
  * A module using an ancestor (`use super::X`, `crate::VERSION`) is KEPT; it closes a cycle
    only together with a path back that does not run parent -> child.
  * Self-edges are ignored.
A cycle is a strongly connected component (Tarjan) of two or more modules. For each one the
script prints the shortest cycle through every edge inside it, each edge with one `file:line`
that creates it; breaking every printed edge of a cycle's chain is not required, one is enough.

Known limits (honest list): macros are not expanded (a path built inside a macro invocation's
tokens is seen, one produced by expansion is not); paths inside string-valued attributes
(`#[serde(with = "crate::x")]`) are blanked with the strings; glob re-exports (`pub use x::*`)
are not followed when resolving a name; `use` of a module through a local alias is resolved
only for `use` statements, not for bare `alias::Item` paths in code (the `use` that created the
alias already gives the edge to the module).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Lexing: blank comments, strings and char literals (keeping offsets and newlines)
# ---------------------------------------------------------------------------------------------

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT_CHARS = re.compile(r"[A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*(\.[0-9][0-9A-Za-z_]*)?")


def _blank(chars: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if chars[k] != "\n":
            chars[k] = " "


def strip_source(text: str) -> tuple[str, dict[int, str]]:
    """Returns text with comments, strings and char literals blanked (same length, same
    newlines) and a map offset -> content for each string literal, whose blanked form is
    `"   "` (first and last character a double quote)."""
    chars = list(text)
    strings: dict[int, str] = {}
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            _blank(chars, i, j)
            i = j
        elif c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            _blank(chars, i, j)
            i = j
        elif _IDENT_START.match(c):
            m = _IDENT_CHARS.match(text, i + 1)
            word, j = text[i : m.end()], m.end()
            if word in ("r", "br", "cr") and j < n and text[j] in "#\"":
                k = j
                while k < n and text[k] == "#":
                    k += 1
                if k < n and text[k] == '"':
                    hashes = k - j
                    close = '"' + "#" * hashes
                    end = text.find(close, k + 1)
                    end = n if end < 0 else end + len(close)
                    strings[i] = text[k + 1 : end - len(close)]
                    _blank(chars, i, end)
                    chars[i] = '"'
                    chars[end - 1] = '"'
                    i = end
                    continue
            if word in ("b", "c") and j < n and text[j] == '"':
                end = _string_end(text, j)
                strings[i] = text[j + 1 : end - 1]
                _blank(chars, i, end)
                chars[i] = '"'
                chars[end - 1] = '"'
                i = end
                continue
            if word == "b" and j < n and text[j] == "'":
                end = _char_end(text, j)
                if end:
                    _blank(chars, i, end)
                    i = end
                    continue
            i = j
        elif c == '"':
            end = _string_end(text, i)
            strings[i] = text[i + 1 : end - 1]
            _blank(chars, i + 1, end - 1)
            i = end
        elif c == "'":
            end = _char_end(text, i)
            if end:
                _blank(chars, i, end)
                i = end
            else:
                i += 1  # a lifetime or a label: 'a
        elif c.isdigit():
            i = _NUMBER.match(text, i).end()
        else:
            i += 1
    return "".join(chars), strings


def _string_end(text: str, quote: int) -> int:
    """Offset just past the string literal whose opening quote is at `quote`."""
    j, n = quote + 1, len(text)
    while j < n:
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        else:
            j += 1
    return n


def _char_end(text: str, quote: int) -> int | None:
    """Offset just past a char literal starting at `quote`, or None for a lifetime."""
    n = len(text)
    if quote + 1 < n and text[quote + 1] == "\\":
        end = text.find("'", quote + 3)
        return None if end < 0 else end + 1
    if quote + 2 < n and text[quote + 2] == "'" and text[quote + 1] != "\n":
        return quote + 3
    return None


@dataclass
class Tok:
    text: str  # an identifier, "::", "=>", one punctuation character, or '"' for a string
    line: int
    offset: int


_TOKEN = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*|::|=>|\"[^\"]*\"|[0-9][0-9A-Za-z_]*|\S")


def tokenize(clean: str) -> list[Tok]:
    toks: list[Tok] = []
    line, last = 1, 0
    for m in _TOKEN.finditer(clean):
        line += clean.count("\n", last, m.start())
        last = m.start()
        t = m.group()
        if t[0] == '"':
            t = '"'
        elif t == "$crate":
            t = "crate"
        elif t[0].isdigit():
            continue
        toks.append(Tok(t, line, m.start()))
    return toks


# ---------------------------------------------------------------------------------------------
# Parsing: modules, use trees, paths
# ---------------------------------------------------------------------------------------------

Mod = tuple[str, ...]  # module path below the crate root; () is the root


@dataclass
class Ref:
    module: Mod
    segments: list[str]
    file: Path
    line: int
    is_use: bool
    alias: str | None = None  # the name a `use` leaf binds in `module`


@dataclass
class Crate:
    lib: Path
    modules: dict[Mod, Path] = field(default_factory=dict)  # module -> file it is written in
    refs: list[Ref] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_CFG_TEST = re.compile(r"^cfg\((test|all\((.*,)?test(,.*)?\))\)$")
_ITEM_KW = {"struct", "enum", "union", "fn", "impl", "trait", "mod", "macro_rules"}


def _is_cfg_test(attr: str) -> bool:
    return bool(_CFG_TEST.match(attr.replace(" ", "")))


def _path_attr(attrs: list[tuple[str, str | None]]) -> str | None:
    for text, string in attrs:
        if re.match(r"^path\s*=", text) and string is not None:
            return string
    return None


@dataclass
class Scope:
    kind: str  # "module", "items" (impl/trait body) or "code"
    module: Mod
    child_dir: Path  # where `mod x;` declared in this scope looks for x.rs / x/mod.rs
    path_base: Path  # what `#[path]` on a `mod x;` in this scope is relative to


def _file_scope(module: Mod, file: Path, mod_rs: bool) -> Scope:
    here = file.parent
    child_dir = here if mod_rs else here / file.stem
    return Scope("module", module, child_dir, here)


def load_crate(lib: Path) -> Crate:
    crate = Crate(lib)
    queue: deque[tuple[Mod, Path, bool]] = deque([((), lib, True)])
    seen_files: set[Path] = set()
    while queue:
        module, file, mod_rs = queue.popleft()
        real = file.resolve()
        if real in seen_files:
            crate.warnings.append(f"{file}: loaded twice, second time as {_name(module)}")
            continue
        seen_files.add(real)
        _parse_file(crate, module, file, mod_rs, queue)
    return crate


def _parse_file(crate: Crate, module: Mod, file: Path, mod_rs: bool, queue) -> None:
    text = file.read_text(encoding="utf-8", errors="replace")
    clean, strings = strip_source(text)
    toks = tokenize(clean)
    # `#![cfg(test)]` among the file's leading inner attributes: the whole module is test code.
    i = 0
    while i + 2 < len(toks) and toks[i].text == "#" and toks[i + 1].text == "!" and toks[i + 2].text == "[":
        attr, _, i = _read_attr(toks, i + 2, strings)
        if _is_cfg_test(attr):
            return
    crate.modules[module] = file
    stack = [_file_scope(module, file, mod_rs)]
    pending: list[tuple[str, str | None]] = []
    leading: list[str] = []  # identifiers since the last item boundary in this scope
    while i < len(toks):
        t = toks[i].text
        scope = stack[-1]
        if t == "#" and i + 1 < len(toks) and toks[i + 1].text in ("[", "!"):
            j = i + 1 if toks[i + 1].text == "[" else i + 2
            if j < len(toks) and toks[j].text == "[":
                attr, string, i = _read_attr(toks, j, strings)
                if toks[j - 1].text != "!":
                    pending.append((attr, string))
                continue
        if any(_is_cfg_test(a) for a, _ in pending):
            i = _skip_item(toks, i, scope.kind)
            pending, leading = [], []
            continue
        if t == "mod" and i + 2 < len(toks) and _is_ident(toks[i + 1].text) and toks[i + 2].text in (";", "{"):
            name = toks[i + 1].text
            child = scope.module + (name,)
            path_attr = _path_attr(pending)
            if toks[i + 2].text == ";":
                _declare_file_module(crate, file, toks[i], scope, child, path_attr, queue)
                i += 3
            elif name == "tests":
                i = _skip_item(toks, i, scope.kind)  # inline test module: not production
            else:
                child_dir = scope.child_dir / (path_attr if path_attr else name)
                crate.modules[child] = file
                stack.append(Scope("module", child, child_dir, child_dir))
                i += 3
            pending, leading = [], []
            continue
        if t == "use":
            i = _read_use(crate, toks, i + 1, scope.module, file)
            pending, leading = [], []
            continue
        if (
            t in ("crate", "super", "self")
            and i + 2 < len(toks)
            and toks[i + 1].text == "::"
            and (i == 0 or toks[i - 1].text not in ("::", "in"))
        ):
            line = toks[i].line
            segments, i = _read_path(toks, i)
            crate.refs.append(Ref(scope.module, segments, file, line, False))
            continue
        if t == "{":
            kind = "items" if scope.kind != "code" and {"impl", "trait", "extern"} & set(leading[:6]) else "code"
            stack.append(Scope(kind, scope.module, scope.child_dir, scope.path_base))
            pending, leading = [], []
        elif t == "}":
            if len(stack) > 1:
                stack.pop()
            pending, leading = [], []
        elif t == ";":
            pending, leading = [], []
        elif _is_ident(t):
            leading.append(t)
        i += 1


def _name(module: Mod) -> str:
    return "::".join(module) if module else "crate"


def _is_ident(t: str) -> bool:
    return bool(_IDENT_START.match(t))


def _read_attr(toks: list[Tok], open_bracket: int, strings: dict[int, str]) -> tuple[str, str | None, int]:
    """Reads `[ ... ]` starting at toks[open_bracket]; returns its text, its first string
    literal's content, and the index after the closing bracket."""
    depth, j, parts, string = 0, open_bracket, [], None
    while j < len(toks):
        t = toks[j].text
        if t == "[":
            depth += 1
        elif t == "]":
            depth -= 1
            if depth == 0:
                break
        if j > open_bracket:
            parts.append(t)
            if t == '"' and string is None:
                string = strings.get(toks[j].offset)
        j += 1
    return " ".join(parts), string, j + 1


def _skip_item(toks: list[Tok], i: int, scope_kind: str) -> int:
    """Index just past the item (or statement, field, match arm) that starts at toks[i]."""
    depth, braced, j = 0, True, i
    has_kw = False
    while j < len(toks):
        t = toks[j].text
        if depth == 0:
            if t in _ITEM_KW:
                has_kw = True
            elif t == "=" and not has_kw:
                braced = False  # `let x = S { .. };`, `const X: T = ...;`: ends at `;`
        if t in "([{":
            depth += 1
        elif t in ")]}":
            depth -= 1
            if depth < 0:
                return j  # the enclosing block ends: the item ended without `;`
            if depth == 0 and t == "}" and braced:
                return j + 1
        elif depth == 0 and t == ";":
            return j + 1
        elif depth == 0 and t == "," and scope_kind == "code":
            return j + 1  # a field, a match arm, an argument
        j += 1
    return j


def _read_path(toks: list[Tok], i: int) -> tuple[list[str], int]:
    segments = [toks[i].text]
    j = i + 1
    while j + 1 < len(toks) and toks[j].text == "::" and _is_ident(toks[j + 1].text):
        segments.append(toks[j + 1].text)
        j += 2
    return segments, j


def _read_use(crate: Crate, toks: list[Tok], i: int, module: Mod, file: Path) -> int:
    """Reads a use tree after `use`; records one Ref per leaf; returns the index after `;`."""
    leaves: list[tuple[list[str], str | None, int]] = []

    def tree(j: int, prefix: list[str]) -> int:
        segs = list(prefix)
        if j < len(toks) and toks[j].text == "::":
            j += 1
        while j < len(toks):
            t = toks[j].text
            if t == "*":
                leaves.append((segs + ["*"], None, toks[j].line))
                return j + 1
            if t == "{":
                j += 1
                while j < len(toks) and toks[j].text != "}":
                    if toks[j].text == ",":
                        j += 1
                        continue
                    before = j
                    j = tree(j, segs)
                    if j == before:  # not a use tree after all: give up on this group
                        j += 1
                return j + 1
            if _is_ident(t) and t != "as":
                segs.append(t)
                line = toks[j].line
                j += 1
                if j < len(toks) and toks[j].text == "::":
                    j += 1
                    continue
                alias = None
                if j + 1 < len(toks) and toks[j].text == "as":
                    alias = toks[j + 1].text
                    j += 2
                leaves.append((segs, alias, line))
                return j
            return j
        return j

    j = tree(i, [])
    while j < len(toks) and toks[j].text != ";":
        j += 1
    for segs, alias, line in leaves:
        crate.refs.append(Ref(module, segs, file, line, True, alias))
    return j + 1


def _declare_file_module(crate, file, tok, scope: Scope, child: Mod, path_attr, queue) -> None:
    if path_attr:
        target = scope.path_base / path_attr
        if target.is_file():
            queue.append((child, target, True))  # rustc treats a #[path] file like mod.rs
            return
        crate.warnings.append(f"{file}:{tok.line}: #[path = \"{path_attr}\"] for {_name(child)}: no such file {target}")
        return
    name = child[-1]
    flat, nested = scope.child_dir / f"{name}.rs", scope.child_dir / name / "mod.rs"
    if flat.is_file() and nested.is_file():
        crate.warnings.append(f"{file}:{tok.line}: both {flat} and {nested} exist for {_name(child)}")
    if flat.is_file():
        queue.append((child, flat, False))
    elif nested.is_file():
        queue.append((child, nested, True))
    else:
        crate.warnings.append(f"{file}:{tok.line}: no file for module {_name(child)} ({flat} or {nested})")


# ---------------------------------------------------------------------------------------------
# Resolution and the graph
# ---------------------------------------------------------------------------------------------


class Resolver:
    def __init__(self, crate: Crate):
        self.modules = set(crate.modules)
        # names bound by `use` in each module: name -> the Ref that binds it
        self.bindings: dict[Mod, dict[str, Ref]] = {}
        for ref in crate.refs:
            if ref.is_use and ref.segments[-1] != "*":
                name = ref.alias or ref.segments[-1]
                if name == "self" and len(ref.segments) > 1:
                    name = ref.segments[-2]
                if name != "_":
                    self.bindings.setdefault(ref.module, {}).setdefault(name, ref)

    def resolve(self, ref: Ref, depth: int = 0) -> tuple[Mod, bool] | None:
        """The deepest module `ref` names, and whether the path ends at that module itself.
        None when the path is not into this crate (std::, another crate)."""
        if depth > 16:
            return None
        segs = ref.segments
        first = segs[0]
        if first == "crate":
            m, k = (), 1
        elif first == "super":
            m, k = ref.module, 0
            while k < len(segs) and segs[k] == "super":
                if not m:
                    return None
                m, k = m[:-1], k + 1
        elif first == "self":
            m, k = ref.module, 1
        elif ref.is_use and ref.module + (first,) in self.modules:
            m, k = ref.module, 0  # `use child::X` (2018 paths relative to the module)
        elif ref.is_use and first in self.bindings.get(ref.module, {}) and self.bindings[ref.module][first] is not ref:
            bound = self.resolve(self.bindings[ref.module][first], depth + 1)
            if bound is None or not bound[1]:
                return None
            m, k = bound[0], 1
        else:
            return None
        while k < len(segs):
            s = segs[k]
            if s == "self" or s == "*":
                k += 1
                continue
            if m + (s,) in self.modules:
                m, k = m + (s,), k + 1
                continue
            binding = self.bindings.get(m, {}).get(s)
            if binding is not None and binding is not ref:
                bound = self.resolve(binding, depth + 1)
                if bound is not None:
                    if bound[1]:
                        m, k = bound[0], k + 1
                        continue
                    return bound[0], False  # a name imported or re-exported by m: its origin
            return m, False
        return m, True


@dataclass
class Graph:
    modules: list[Mod]
    edges: dict[tuple[Mod, Mod], tuple[Path, int]]  # kept edge -> first example
    dropped: int


def build_graph(crate: Crate, keep_parent_edges: bool = False) -> Graph:
    resolver = Resolver(crate)
    edges: dict[tuple[Mod, Mod], tuple[Path, int]] = {}
    dropped = 0
    for ref in crate.refs:
        resolved = resolver.resolve(ref)
        if resolved is None:
            continue
        src, dst = ref.module, resolved[0]
        if src == dst:
            continue
        if dst[: len(src)] == src and not keep_parent_edges:
            dropped += 1  # a module using its own descendant: fine
            continue
        edges.setdefault((src, dst), (ref.file, ref.line))
    return Graph(sorted(crate.modules), edges, dropped)


def strongly_connected(nodes: list[Mod], succ: dict[Mod, list[Mod]]) -> list[list[Mod]]:
    """Tarjan's algorithm, iterative."""
    index: dict[Mod, int] = {}
    low: dict[Mod, int] = {}
    on_stack: set[Mod] = set()
    stack: list[Mod] = []
    out: list[list[Mod]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, pos = work.pop()
            if pos == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            children = succ.get(v, [])
            if pos < len(children):
                work.append((v, pos + 1))
                w = children[pos]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def cycles_of(component: list[Mod], succ: dict[Mod, list[Mod]]) -> list[list[Mod]]:
    """For every edge u -> v inside the component, the shortest cycle through it (deduplicated):
    every edge that takes part in a cycle is shown at least once."""
    members = set(component)
    found: list[list[Mod]] = []
    seen: set[tuple[Mod, ...]] = set()
    for u in component:
        for v in succ.get(u, []):
            if v not in members:
                continue
            prev: dict[Mod, Mod | None] = {v: None}
            queue = deque([v])
            while queue and u not in prev:
                x = queue.popleft()
                for y in succ.get(x, []):
                    if y in members and y not in prev:
                        prev[y] = x
                        queue.append(y)
            path, x = [], u
            while x is not None:
                path.append(x)
                x = prev[x]
            cycle = [u] + list(reversed(path))[:-1]  # u -> v -> ... -> (back to u)
            start = cycle.index(min(cycle))
            canon = tuple(cycle[start:] + cycle[:start])
            if canon not in seen:
                seen.add(canon)
                found.append(list(canon))
    return sorted(found, key=lambda c: (len(c), c))


@dataclass
class Report:
    modules: int
    edges: int
    components: list[list[Mod]]
    cycles: list[list[Mod]]
    text: str


def _where(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def check(lib: Path, keep_parent_edges: bool = False, dot: Path | None = None) -> Report:
    crate = load_crate(lib)
    graph = build_graph(crate, keep_parent_edges)
    succ: dict[Mod, list[Mod]] = {}
    for a, b in sorted(graph.edges):
        succ.setdefault(a, []).append(b)
    components = [c for c in strongly_connected(graph.modules, succ) if len(c) > 1]
    components.sort()
    lines: list[str] = []
    for w in crate.warnings:
        lines.append(f"warning: {w}")
    all_cycles: list[list[Mod]] = []
    for n, component in enumerate(components, 1):
        cycles = cycles_of(component, succ)
        lines.append(
            f"cycle group {n}: {len(component)} modules ({', '.join(_name(m) for m in component)}), "
            f"{len(cycles)} cycle(s):"
        )
        for cycle in cycles:
            all_cycles.append(cycle)
            lines.append("  " + " -> ".join(_name(m) for m in cycle + [cycle[0]]))
            for a, b in zip(cycle, cycle[1:] + cycle[:1]):
                f, line = graph.edges[(a, b)]
                lines.append(f"      {_name(a)} -> {_name(b)}    {_where(f)}:{line}")
    lines.append(
        f"module-cycles: {len(graph.modules)} modules, {len(graph.edges)} edges, "
        f"{len(all_cycles)} cycles ({_where(lib)}"
        + (f"; {len(components)} strongly connected groups" if components else "")
        + ("; parent->child edges kept" if keep_parent_edges else "")
        + ")"
    )
    if dot is not None:
        in_cycle = {(a, b) for comp in components for a in comp for b in succ.get(a, []) if b in comp}
        out = ["digraph modules {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for m in graph.modules:
            out.append(f'  "{_name(m)}";')
        for (a, b), (f, line) in sorted(graph.edges.items()):
            style = ' color=red, penwidth=2' if (a, b) in in_cycle else ""
            out.append(f'  "{_name(a)}" -> "{_name(b)}" [tooltip="{_where(f)}:{line}"{"," if style else ""}{style}];')
        out.append("}")
        dot.write_text("\n".join(out) + "\n")
    return Report(len(graph.modules), len(graph.edges), components, all_cycles, "\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------------

_CASES: list[tuple] = [
    # (name, files below src/, expected strongly connected groups as sets of module names
    #  [, expected number of modules])
    (
        "cycle through use crate::",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::Thing;\npub struct Other;\n",
            "b.rs": "use crate::a::Other;\npub struct Thing;\n",
        },
        [{"a", "b"}],
    ),
    (
        "cycle through path expressions only",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "pub fn f() -> crate::b::Thing { crate::b::Thing }\n",
            "b.rs": "pub struct Thing;\nfn g() { let _ = crate::a::f(); }\n",
        },
        [{"a", "b"}],
    ),
    (
        "parent using its child, child using its parent: no cycle",
        {
            "lib.rs": "pub mod p;\n",
            "p.rs": "pub mod c;\nuse c::Thing;\npub struct Ctx;\npub fn f() { c::g(); self::c::g(); }\n",
            "p/c.rs": "use super::Ctx;\npub struct Thing;\npub fn g() { let _ = crate::p::f; }\n",
        },
        [],
    ),
    (
        "uses hidden in comments, doc comments, strings and chars: no cycle",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::Thing;\npub struct Other;\n",
            "b.rs": (
                "//! Uses [crate::a::Other] in docs.\n"
                "// use crate::a::Other;\n"
                "/* outer /* nested crate::a::Other */ still comment crate::a::Other */\n"
                "/// see crate::a::Other\n"
                "pub struct Thing;\n"
                'const S: &str = "crate::a::Other \\" crate::a::Other";\n'
                'const R: &str = r#"crate::a::Other " crate::a::Other"#;\n'
                'const B: &[u8] = b"crate::a::Other";\n'
                "const Q: char = '\"'; const E: char = '\\'';\n"
                "fn lt<'a>(x: &'a str) -> &'a str { x }\n"
            ),
        },
        [],
    ),
    (
        "a real use right after a char literal holding a quote: cycle",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::Thing;\npub struct Other;\n",
            "b.rs": "pub struct Thing;\nfn g() { let q = '\"'; let _ = crate::a::Other; }\n",
        },
        [{"a", "b"}],
    ),
    (
        "test code may import anything: no cycle",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::Thing;\npub struct Other;\n",
            "b.rs": (
                "pub struct Thing { #[cfg(test)] other: crate::a::Other, pub n: u8 }\n"
                "#[cfg(test)]\nuse crate::a::Other;\n"
                "#[cfg(test)]\nfn helper() -> crate::a::Other { crate::a::Other }\n"
                "#[cfg(test)]\nmod testutil;\n"
                "mod tests {\n    use crate::a::*;\n    use super::*;\n}\n"
                "#[cfg(all(test, feature = \"x\"))]\nmod more { use crate::a::Other; }\n"
            ),
            "b/testutil.rs": "use crate::a::Other;\n",
        },
        [],
        3,  # crate, a, b: neither tests nor testutil nor more is a module
    ),
    (
        "grouped use braces reach a nested module: cycle",
        {
            "lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
            "a.rs": "use crate::{c, b::{x::{self, Deep}, Top}};\n",
            "b.rs": "pub mod x;\npub struct Top;\n",
            "b/x.rs": "pub struct Deep;\npub fn f() { super::super::a::g(); }\n",
            "c.rs": "",
        },
        [{"a", "b::x"}],
    ),
    (
        "mod.rs layout, #[path] and an inline module: cycle",
        {
            "lib.rs": "pub mod foo;\npub mod b;\n",
            "foo/mod.rs": '#[path = "odd/name.rs"]\npub mod bar;\npub mod inner { pub use crate::b::Thing; }\n',
            "foo/odd/name.rs": "pub fn f() -> crate::b::Thing { todo!() }\n",
            "b.rs": "pub struct Thing;\npub fn g() { crate::foo::bar::f(); }\n",
        },
        [{"b", "foo::bar"}],
        5,  # crate, foo, foo::bar, foo::inner, b
    ),
    (
        "inline non-test module is a child of its file's module: cycle",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "pub mod inner {\n    use super::super::b::Thing;\n    pub struct Other;\n}\n",
            "b.rs": "pub struct Thing;\nfn g() -> crate::a::inner::Other { todo!() }\n",
        },
        [{"a::inner", "b"}],
    ),
    (
        "an item re-exported by a parent points at its real module: cycle",
        {
            "lib.rs": "pub mod artifact;\npub mod commands;\n",
            "artifact.rs": "pub mod metadata;\npub use metadata::Checksums;\n",
            "artifact/metadata.rs": "pub struct Checksums;\nfn f() { crate::commands::parse(); }\n",
            "commands.rs": "pub fn parse() -> crate::artifact::Checksums { todo!() }\n",
        },
        [{"artifact::metadata", "commands"}],
    ),
    (
        "three-module chain through super::, pub use and self-edges",
        {
            "lib.rs": "pub mod events;\npub mod orch;\n",
            "events.rs": "use crate::orch::view::View;\npub struct Event;\nfn s() { self::s2(); crate::events::s2(); }\nfn s2() {}\n",
            "orch.rs": "pub mod view;\npub mod backup;\n",
            "orch/view.rs": "pub use super::backup::Plan;\npub struct View;\n",
            "orch/backup.rs": "pub struct Plan;\npub fn emit(e: crate::events::Event) {}\n",
        },
        [{"events", "orch::view", "orch::backup"}],
    ),
]


def self_test() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="module-cycles-") as tmp:
        for n, (name, files, expected, *modules) in enumerate(_CASES):
            root = Path(tmp) / f"case{n}" / "src"
            for rel, body in files.items():
                p = root / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(body)
            report = check(root / "lib.rs")
            got = [{_name(m) for m in c} for c in report.components]
            ok = sorted(map(sorted, got)) == sorted(map(sorted, expected)) and "warning" not in report.text
            if modules and report.modules != modules[0]:
                ok = False
                print(f"     expected {modules[0]} modules, found {report.modules}")
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
            if not ok:
                print(f"     expected groups {expected}, got {got}\n" + report.text)
    # The lexer on its own: what survives stripping.
    clean, strings = strip_source('a /* x /* y */ z */ b "s\\"t" r##"u"#v"## \'c\' \'\\n\' \'l c // d\n e')
    lexed = clean.split()
    ok = lexed == ['a', 'b', '"', '"', '"', '"', "'l", 'c', 'e'] and sorted(strings.values()) == ['s\\"t', 'u"#v']
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} lexer keeps code, blanks comments, strings, chars ({lexed})")
    print(f"self-test: {len(_CASES) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    sys.setrecursionlimit(10000)
    ap = argparse.ArgumentParser(description="Fail when a Rust crate's modules import each other in a cycle.")
    ap.add_argument("--lib", action="append", type=Path, help="crate root (default src/lib.rs); may be repeated")
    ap.add_argument("--dot", type=Path, help="write the module graph (Graphviz) to FILE; cycle edges in red")
    ap.add_argument("--quiet", action="store_true", help="print nothing when there is no cycle")
    ap.add_argument("--keep-parent-edges", action="store_true", help="also count a module using its descendant")
    ap.add_argument("--self-test", action="store_true", help="check the checker on small fake crates")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    libs = args.lib or [Path("src/lib.rs")]
    if args.dot and len(libs) > 1:
        ap.error("--dot takes one --lib")
    status = 0
    for lib in libs:
        if not lib.is_file():
            ap.error(f"{lib}: no such file")
        report = check(lib, args.keep_parent_edges, args.dot)
        if report.cycles:
            status = 1
            print(report.text)
        elif not args.quiet:
            print(report.text)
    return status


if __name__ == "__main__":
    sys.exit(main())
