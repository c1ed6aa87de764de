#!/usr/bin/env python3
"""Certificate path building on hostile x5c sets (issue 8, class 5).

For each shape and size N, a real SIF is signed by a real leaf whose signature's x5c
carries the hostile certificates; the site root is unrelated, so no path exists and the
search must give up. Timed: `sifguard verify --roots` as a process — this tree ("after")
and, with --before REV, the package as it was at git revision REV ("before", killed at
--timeout) — the library's build_path with the same certificates given as operator
intermediates (no x5c cap: the search bounds alone), and `openssl verify -untrusted` on
the same certificates as the independent peer.

Usage: tests/bench/path_building.py [--before 8d710ba] [--sizes 8,10,16,64] [--timeout 60]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from chain_images import cross_signed_loop, same_key_loop, signed_image  # noqa: E402
from pki import cert, new_key, pem, write  # noqa: E402


def run_timed(cmd, cwd, timeout):
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return time.monotonic() - t0, p.returncode, (p.stderr.strip().splitlines() or [""])[-1][:110]
    except subprocess.TimeoutExpired:
        return None, None, f"killed after {timeout} s"


def fmt(sec):
    return f">{'':1}timeout" if sec is None else f"{sec * 1000:9.1f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=None, help="git revision to time as 'before'")
    ap.add_argument("--sizes", default="8,10,16,64")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    from sifguard.x509.chain import ChainError, build_path
    with tempfile.TemporaryDirectory() as d:
        before_dir = None
        if a.before:
            before_dir = os.path.join(d, "before")
            os.mkdir(before_dir)
            arch = subprocess.run(["git", "-C", ROOT, "archive", a.before, "sifguard"], check=True,
                                  capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", before_dir], input=arch, check=True)
        rk = new_key("ec-p384")
        root = cert(rk, "Site Root", ca=True)
        root_pem = write(os.path.join(d, "root.pem"), pem(root))
        from sifguard.integrity.verify import Trust, verify_image
        from sifguard.sif.image import SifImage
        ik, lk = new_key(), new_key()
        from chain_images import ca_cert
        inter = ca_cert(ik, "Issuing", rk, "Site Root")
        good = cert(lk, "builder", ik, inter)
        img = signed_image(d, lk, [good, inter], "control.sif")
        t0 = time.monotonic()
        with SifImage(img) as f:
            ok = verify_image(f, Trust(roots=(root,))).verified
        print(f"control: a real leaf -> intermediate -> root, verify_image in-process "
              f"{(time.monotonic() - t0) * 1000:.1f} ms (verified={ok})")
        print(f"{'shape':<18}{'N':>4}  {'after (CLI)':>12}  {'before (CLI)':>13}  {'build_path':>12}  "
              f"{'openssl':>11}  after reason")
        for shape, make in (("same-key serials", same_key_loop), ("cross-signed", cross_signed_loop)):
            for n in sizes:
                if shape == "cross-signed":
                    import math
                    n = max(2, math.isqrt(n))           # n keys -> n*n certificates
                leaf_key, leaf, cas = make(n)
                img = signed_image(d, leaf_key, [leaf] + cas, f"{shape[:5]}-{n}.sif")
                cmd = [sys.executable, "-m", "sifguard", "verify", img, "--roots", root_pem]
                after, rc, why = run_timed(cmd, ROOT, a.timeout)
                before = run_timed(cmd, before_dir, a.timeout)[0] if before_dir else None
                t0 = time.monotonic()
                try:
                    build_path(leaf, cas, [root])
                    lib = "path?!"
                except ChainError as e:
                    lib = f"{(time.monotonic() - t0) * 1000:9.1f} ms"
                    why_lib = str(e)
                inter_pem = write(os.path.join(d, f"u-{shape[:5]}-{n}.pem"), pem(*cas))
                leaf_pem = write(os.path.join(d, f"l-{shape[:5]}-{n}.pem"), pem(leaf))
                peer = run_timed(["openssl", "verify", "-purpose", "any", "-CAfile", root_pem,
                                  "-untrusted", inter_pem, leaf_pem], ROOT, a.timeout)[0]
                label = f"{len(cas)}"
                print(f"{shape:<18}{label:>4}  {fmt(after):>12}  "
                      f"{(fmt(before) if before_dir else 'n/a'):>13}  {lib:>12}  {fmt(peer):>11}  "
                      f"rc={rc} {why.removeprefix('sifguard: ')}")
                print(f"{'':<24}build_path: {why_lib}")


if __name__ == "__main__":
    main()
