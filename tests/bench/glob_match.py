"""Path-glob matching: sifguard's matcher (per-segment regexes with atomic groups when the
glob has no `**`, a linear automaton otherwise) against Python's `re` on the plain
backtracking translation sifguard used before, on typical rules and on a hostile path
where backtracking explodes. Prints per-match times and ratios; no asserts.

    python3 tests/bench/glob_match.py
"""
import re
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
    __import__("os").path.dirname(__import__("os").path.abspath(__file__)))))

from sifguard.policy import globs  # noqa: E402


def as_regex(g: str) -> re.Pattern:
    out, i = [], 0
    while i < len(g):
        if g.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if g[i] == "*" else "[^/]" if g[i] == "?" else re.escape(g[i]))
        i += 1
    return re.compile("".join(out) + r"\Z")


def per_call(f, arg, budget=0.3):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget:
        f(arg)
        n += 1
    return (time.perf_counter() - t0) / n


CASES = [
    ("/apps/containers/**", "/apps/containers/bio/2024/blast.sif"),
    ("/apps/containers/**", "/scratch/alice/x.sif"),
    ("/scratch/*/trial/*.sif", "/scratch/alice/trial/image-2024.sif"),
    ("/a/**/b/*.sif", "/a/x/y/z/b/c.sif"),
]

print(f"{'glob':<26} {'path':<38} {'sifguard':>10} {'re':>9} {'ratio':>7}")
for g, p in CASES:
    a, r = globs.compile_path(g), as_regex(g)
    ta, tr = per_call(a.match, p), per_call(r.match, p)
    print(f"{g:<26} {p:<38} {ta * 1e6:8.2f}us {tr * 1e6:7.2f}us {ta / tr:6.1f}x")

g = "/s/**a**a**a**a**b/*.sif"
for n in (10, 20, 40, 60):
    p = "/s/" + "a/" * n + "x.sif"
    a, r = globs.compile_path(g), as_regex(g)
    t0 = time.perf_counter()
    a.match(p)
    ta = time.perf_counter() - t0
    t0 = time.perf_counter()
    r.match(p)
    tr = time.perf_counter() - t0
    print(f"hostile path, {len(p):3d} chars: sifguard {ta * 1e3:8.3f} ms, re {tr * 1e3:10.3f} ms ({tr / ta:8.1f}x)")
