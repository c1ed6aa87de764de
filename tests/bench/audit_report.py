#!/usr/bin/env python3
"""Speed and memory of `sifguard audit report` over a large decision log.

Writes N synthetic records (default 1 000 000) shaped like the engine's: a realistic log
(500 images, 2 000 users: every tally exact) and an adversarial one (50 000 users and
30 000 images: the bounded counters evict). Prints wall time and the report process's peak
RSS, with two peers over the same file: a bare `json.loads` loop (the floor: parsing only)
and `jq` counting refusals per user (when installed).

Usage: tests/bench/audit_report.py [N]
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000000Z"


def write_log(path: str, n: int, users: int, images: int) -> None:
    rnd = random.Random(1)
    t0 = time.time() - 30 * 86400
    checks = {"integrity": {"action": "enforce", "result": "fail", "reason": "group 1 is not signed"},
              "authenticity": {"action": "enforce", "result": "skipped", "reason": "not reached"}}
    with open(path, "w") as f:
        for i in range(n):
            refuse = i % 3 == 0
            r = {"image": f"/sw/img{rnd.randrange(images)}.sif", "allowed": not refuse, "verified": not refuse,
                 "decision": "refuse" if refuse else "allow", "rule": "default", "action": "enforce",
                 "reason": "group 1 is not signed" if refuse else "signed by CN=builder; rule 'default'",
                 "signers": [] if refuse else [{"subject": "CN=builder", "email": ["b@x"], "group": 1}],
                 "revocation": [], "revocation_source": "off", "image_cache": "hit",
                 "context": {"user": f"user{rnd.randrange(users)}", "account": "a", "partition": "p"},
                 "elapsed_ms": 1.2, "checks": checks, "time": iso(t0 + i * 30 * 86400 / n), "host": "n1",
                 "pid": 1000 + i % 5000, "uid": 0, "hook": "shim", "command": "apptainer exec",
                 "argv": "apptainer exec /sw/x.sif python run.py"}
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def measured(argv: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of one child, reaped with wait4."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{argv[:4]} failed: {p.returncode}")
    return time.monotonic() - t0, usage.ru_maxrss


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as d:
        for name, users, images in (("realistic", 2000, 500), ("adversarial", 50_000, 30_000)):
            log = os.path.join(d, f"{name}.jsonl")
            write_log(log, n, users, images)
            mib = os.path.getsize(log) / 2**20
            secs, rss = measured([sys.executable, "-m", "sifguard", "audit", "report", "--log", log, "--json"])
            floor, frss = measured([sys.executable, "-c", "import json,sys\nfor l in open(sys.argv[1],'rb'): "
                                    "json.loads(l)", log])
            line = (f"{name:11} {n} records, {mib:.0f} MiB: report {secs:.1f} s ({n / secs / 1000:.0f} k lines/s), "
                    f"peak RSS {rss / 1024:.1f} MiB; json.loads loop {floor:.1f} s (report/floor {secs / floor:.2f})")
            if shutil.which("jq"):
                jq, _ = measured(["sh", "-c", f"jq -c 'select(.decision==\"refuse\")|.context.user' {log} | "
                                 "sort | uniq -c > /dev/null"])
                line += f"; jq per-user refusals {jq:.1f} s (report/jq {secs / jq:.2f})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
