#!/usr/bin/env python3
"""Verification latency under a site policy, for a >=1 GiB signed image:
cold (no caches), warm (unchanged image, cached OCSP) and touched (image re-hashed,
OCSP still cached) — as a library call and as a CLI process — with a real
`sifguard ca serve` responder on 127.0.0.1. Goal: warm <= 50 ms (library) and
<= 150 ms (CLI), flat in image size. Usage: tests/bench/verify_latency.py [--size-mib 1100]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]
from benchlib import (SG, compile_bytecode, free_port, make_ca, median_ms, policy as make_policy,  # noqa: E402
                      responder, sign)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1100)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    compile_bytecode(ROOT)
    from sifguard.enforce.decide import Engine
    from sifguard.policy.loader import load
    from sifguard.sif.image import NewObject, create
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        p = free_port()
        ca = make_ca(d, p)
        part = f"{d}/part.bin"
        with open(part, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(a.size_mib):
                f.write(block[i % 7:] + block[:i % 7])
        img = f"{d}/big.sif"
        create(img, [NewObject(0x4001, data=b"Bootstrap: scratch\n", group=1),
                     NewObject(0x4004, path=part, group=1, extra=(1).to_bytes(4, "little") + (2).to_bytes(4, "little") + b"02\0")])
        os.unlink(part)
        sign(d, img)
        os.sync()
        with responder(ca, p):
            def policy(tag):
                return make_policy(d, ca, tag)

            def lib(pol):
                v = Engine(load(pol)).decide(img)
                assert v.allowed, v.reason
                return v

            def cli(pol):
                subprocess.run(SG + ["verify", img, "--policy", pol], check=True, capture_output=True)

            size = os.path.getsize(img)
            subprocess.run(["cat", img], stdout=subprocess.DEVNULL)   # page cache warm for every case
            print(f"image {size / 2**30:.2f} GiB; responder sifguard ca serve on 127.0.0.1; medians")
            res = {}
            for mode, fn, n in (("library", lib, 5), ("CLI", cli, 5)):
                cold = median_ms(lambda: fn(policy(f"{mode}-cold-{time.monotonic_ns()}")), 2)
                warm_pol = policy(f"{mode}-warm")
                fn(warm_pol)                                  # fill both caches
                warm = median_ms(lambda: fn(warm_pol), n)
                touched = []
                for _ in range(2):
                    os.utime(img)
                    touched.append(median_ms(lambda: fn(warm_pol), 1))
                res[mode] = (cold, warm, statistics.median(touched))
                print(f"{mode:8} cold {cold:8.1f} ms   warm {warm:7.1f} ms   touched {res[mode][2]:8.1f} ms")
            # flat in image size: the same warm path for a 40 KiB image
            small = f"{d}/small.sif"
            import shutil
            shutil.copyfile(os.path.join(ROOT, "tests", "data", "apptainer", "images", "one-group.sif"), small)
            sign(d, small)
            sp = policy("small")
            Engine(load(sp)).decide(small)
            lw = median_ms(lambda: Engine(load(sp)).decide(small), 5)
            cw = median_ms(lambda: subprocess.run(SG + ["verify", small, "--policy", sp], check=True,
                                              capture_output=True), 5)
            print(f"40 KiB image, warm: library {lw:.1f} ms, CLI {cw:.1f} ms")


if __name__ == "__main__":
    main()
