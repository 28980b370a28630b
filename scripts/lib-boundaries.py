#!/usr/bin/env python3
"""The library's boundaries: its modules depend on each other one way only,
it reports errors as typed values (no anyhow below the binaries, no
public function whose error is a String), and its terminal code stays in
`tui/` (no ratatui, crossterm or indicatif anywhere else in the library).

Reads every file under src/ (not main.rs, cli/ or bin/: the binaries may
use everything), takes each reference to another top-level module of the crate
(`crate::NAME`; the code has no `crate::{...}` groups), and reports
every cycle between top-level modules (strongly connected components of
two or more), with one reference per edge so it can be found. Exit 1 if
there is any. Test code (`#[cfg(test)] mod tests` files and blocks) counts
too: a test that needs a module above its own is a cycle all the same.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def top_module(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    # main.rs and cli/ are the hybrid-tui binary, bin/ the executive's.
    if rel.parts[0] in ("main.rs", "cli", "bin", "lib.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def edges() -> dict[str, dict[str, str]]:
    """module -> {module it uses -> 'file:line' of one such use}."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(ROOT.rglob("*.rs")):
        me = top_module(f)
        if me is None:
            continue
        out.setdefault(me, {})
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            for m in REF.finditer(code):
                other = m.group(1)
                if other == me:
                    continue
                if (ROOT / f"{other}.rs").exists() or (ROOT / other).is_dir():
                    out[me].setdefault(other, f"{f.relative_to(ROOT.parent)}:{n}")
    return out


def cycles(g: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components of 2+ modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
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
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def anyhow_uses() -> list[str]:
    """'file:line' of every use of anyhow in the library."""
    out = []
    for f in sorted(ROOT.rglob("*.rs")):
        if top_module(f) is None and f.name != "lib.rs":
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if "anyhow" in line.split("//", 1)[0]:
                out.append(f"{f.relative_to(ROOT.parent)}:{n}")
    return out


STRING_ERR = re.compile(r"->\s*Result<.*,\s*String>\s*(where\b.*)?$")


def string_errors() -> list[str]:
    """'file:line' of every public function of the library whose error is a String."""
    out = []
    for f in sorted(ROOT.rglob("*.rs")):
        if top_module(f) is None:
            continue
        text = f.read_text()
        for m in re.finditer(r"\bpub fn\b", text):
            sig = text[m.start():]
            end = min((i for i in (sig.find("{"), sig.find(";")) if i >= 0), default=len(sig))
            sig = " ".join(sig[:end].split())
            if STRING_ERR.search(sig):
                line = text.count("\n", 0, m.start()) + 1
                out.append(f"{f.relative_to(ROOT.parent)}:{line}: {sig}")
    return out


TERMINAL = re.compile(r"\b(ratatui|crossterm|indicatif)\b")


def terminal_uses() -> list[str]:
    """'file:line' of every use of a terminal crate in the library outside tui/."""
    out = []
    for f in sorted(ROOT.rglob("*.rs")):
        me = top_module(f)
        if me is None or me == "tui":
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if TERMINAL.search(line.split("//", 1)[0]):
                out.append(f"{f.relative_to(ROOT.parent)}:{n}")
    return out


def main() -> int:
    g = edges()
    bad = cycles(g)
    status = 0
    if not bad:
        print(f"lib-boundaries: {len(g)} top-level modules of src/, no cycle")
    for comp in bad:
        print("lib-boundaries: FAILED: these modules use each other: " + ", ".join(comp))
        for a in comp:
            for b, where in sorted(g[a].items()):
                if b in comp:
                    print(f"  {a} -> {b}  ({where})")
        status = 1
    uses = anyhow_uses()
    if uses:
        print("lib-boundaries: FAILED: anyhow in the library (typed errors there; anyhow is the binaries'):")
        for u in uses:
            print(f"  {u}")
        status = 1
    else:
        print("lib-boundaries: no anyhow in the library")
    strings = string_errors()
    if strings:
        print("lib-boundaries: FAILED: public functions of the library with String errors (give them an error type):")
        for u in strings:
            print(f"  {u}")
        status = 1
    else:
        print("lib-boundaries: no public function of the library returns a String error")
    terminal = terminal_uses()
    if terminal:
        print("lib-boundaries: FAILED: terminal crates outside tui/ (the engine draws nothing; move it to tui/ or cli/):")
        for u in terminal:
            print(f"  {u}")
        status = 1
    else:
        print("lib-boundaries: ratatui, crossterm and indicatif only in tui/ and the binaries")
    return status


if __name__ == "__main__":
    sys.exit(main())
