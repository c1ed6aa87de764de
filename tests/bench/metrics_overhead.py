#!/usr/bin/env python3
"""What issue 11's numbers cost:

* node decision counters (policy metrics.textfile): one `counters.count()` (flock,
  read, rewrite, rename), and a warm decision (`Engine.decide`, verified-image and OCSP
  caches filled, audit log on) with and without metrics.textfile — the per-decision
  difference, against the decision itself;
* `ca serve`: GET /metrics and GET /healthz wall time (new connection each, 2 workers),
  against GET /root.pem (the cheapest static answer) as the peer.

Usage: tests/bench/metrics_overhead.py [--n 2000]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]
from benchlib import compile_bytecode, free_port, make_ca, responder, sign  # noqa: E402


def per_call_us(fn, n: int) -> float:
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    compile_bytecode(ROOT)
    import requests
    from sifguard.enforce import counters
    from sifguard.enforce.decide import Engine
    from sifguard.policy.loader import load
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        shm = tempfile.mkdtemp(dir="/dev/shm") if os.path.isdir("/dev/shm") else None
        files = {}
        for where, base in (("disk", d), ("tmpfs", shm)):
            if base is None:
                continue
            os.chmod(base, 0o755)
            tf = files[where] = f"{base}/tf/sifguard.prom"
            os.makedirs(os.path.dirname(tf), mode=0o755)
            for i, cls in enumerate(counters.REASON_CLASSES):     # a realistic file: ~20 series
                for hook in ("shim", "task"):
                    counters.count(tf, hook, "refuse" if i else "allow", cls)
            us = per_call_us(lambda: counters.count(tf, "shim", "allow", "ok"), n)
            import subprocess
            fs = subprocess.run(["stat", "-f", "-c", "%T", base], capture_output=True, text=True).stdout.strip()
            print(f"counters.count() on {where} ({fs}): {us:.1f} µs per increment "
                  f"({len(counters.parse(open(tf).read()))} series in the file)")

        from sifguard.enforce import audit
        from sifguard.enforce.core import Verdict
        v = Verdict(image="/x.sif", allowed=True, decision="allow")
        base = per_call_us(lambda: audit.write_decision(f"{d}/audit-w.jsonl", v, hook="shim"), n)
        print(f"audit.write_decision (log on disk): {base:.1f} µs without metrics.textfile")
        for where, tf in files.items():
            us = per_call_us(lambda: audit.write_decision(f"{d}/audit-w.jsonl", v, metrics=tf, hook="shim"), n)
            print(f"  with metrics.textfile on {where}: {us:.1f} µs (+{us - base:.1f} µs per decision)")

        port = free_port()
        ca = make_ca(d, port)
        img = f"{d}/img.sif"
        shutil.copyfile(os.path.join(ROOT, "tests", "data", "apptainer", "images", "one-group.sif"), img)
        sign(d, img)
        with responder(ca, port):
            engines = {}
            for tag, metrics in [("without", "")] + [(w, f"metrics: {{textfile: {f}}}\n") for w, f in files.items()]:
                p = f"{d}/policy-{tag}.yaml"
                open(p, "w").write(f"version: 1\ntrust: {{roots: [{ca}/root.pem]}}\nrevocation:\n  mode: enforce\n"
                                   f"  cache_dir: {d}/ocsp-{tag}\ncache: {{images: {d}/img-{tag}}}\n"
                                   f"audit: {{log: {d}/audit-{tag}.jsonl}}\n{metrics}")
                engines[tag] = Engine(load(p))
                assert engines[tag].decide(img).allowed          # fills the caches
            m = max(50, n // 10)
            res = {}
            for _ in range(3):                                   # interleaved rounds
                for tag, eng in engines.items():
                    res.setdefault(tag, []).append(per_call_us(lambda: eng.decide(img), m))
            wo = statistics.median(res["without"])
            print(f"warm decision without metrics.textfile: {wo:.0f} µs")
            for where in files:
                w = statistics.median(res[where])
                print(f"warm decision with metrics.textfile on {where}: {w:.0f} µs: +{w - wo:.0f} µs per decision "
                      f"(x{w / wo:.3f})")

            url = f"http://127.0.0.1:{port}"
            for _ in range(20):
                requests.get(url + "/crl.der", timeout=5)
            k = max(50, n // 10)
            for path in ("/root.pem", "/healthz", "/metrics"):
                ms = per_call_us(lambda: requests.get(url + path, timeout=5), k) / 1000
                print(f"GET {path}: {ms:.2f} ms (new connection each)")
            body = requests.get(url + "/metrics", timeout=5).content
            print(f"/metrics body: {len(body)} bytes")
        if shm:
            shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
