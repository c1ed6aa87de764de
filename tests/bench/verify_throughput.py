#!/usr/bin/env python3
"""Sign and verify a >=1 GiB SIF with the sifguard CLI and compare with `openssl dgst
-sha256` of the same file, run as a peer in this same process tree.

Prints wall times, ratios (goal <= 1.05 (issue 9): one streaming pass, each byte hashed once)
and each child's peak RSS (goal <= 64 MiB whatever the image size).
Usage: tests/bench/verify_throughput.py [--size-mib 1100] [--dir DIR] [--runs 5]
Not collected by pytest.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# This parent stays small (no sifguard/cryptography import): a child's ru_maxrss
# includes the memory of the process it was forked from.


def run(cmd):
    """Wall time and peak RSS (MiB) of one child."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode()
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}: {err}")
    return wall, ru.ru_maxrss / 1024


def make(d, size_mib):
    """In a child process: a key pair and a SIF with a size_mib partition of random data."""
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from cryptography.hazmat.primitives import serialization
    from pki import key_pem, new_key, write
    from sifguard.sif.image import NewObject, create
    part = os.path.join(d, "part.bin")
    with open(part, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size_mib):
            f.write(block[i % 7:] + block[:i % 7])
    k = new_key("ec-p256")
    write(os.path.join(d, "k.pem"), key_pem(k), 0o600)
    write(os.path.join(d, "k.pub"), k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    create(os.path.join(d, "big.sif"), [
        NewObject(0x4001, data=b"Bootstrap: scratch\n", group=1),
        NewObject(0x4004, path=part, group=1, extra=struct.pack("<ii", 1, 2) + b"02\x00")])
    os.unlink(part)


def main():
    if sys.argv[1:2] == ["--make"]:
        return make(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1100)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        run([sys.executable, __file__, "--make", d, str(a.size_mib)])
        kp, pub, img = (os.path.join(d, n) for n in ("k.pem", "k.pub", "big.sif"))
        size = os.path.getsize(img)
        sg = [sys.executable, "-m", "sifguard"]
        os.sync()  # the image was just written: flush it so sign's fdatasync measures only its own writes
        # warm the page cache so every contender reads from memory alike
        run(["openssl", "dgst", "-sha256", img])
        best = {"openssl": (1e9, 0), "sign": (1e9, 0), "verify": (1e9, 0)}
        for i in range(a.runs):
            best["openssl"] = min(best["openssl"], run(["openssl", "dgst", "-sha256", img]))
            best["sign"] = min(best["sign"], run(sg + ["sign", img, "--key", kp]))
            best["verify"] = min(best["verify"], run(sg + ["verify", img, "--key", pub]))
        # python startup, for reference (part of every CLI run)
        startup = min(run([sys.executable, "-c", "import sifguard.cli.main"])[0] for _ in range(3))
        o = best["openssl"][0]
        print(f"image: {size / 2**30:.2f} GiB ({size} bytes), best of {a.runs} runs, page cache warm")
        print(f"openssl dgst -sha256   {o:7.3f} s  {size / o / 2**20:7.0f} MiB/s  peak RSS {best['openssl'][1]:6.1f} MiB")
        for name in ("sign", "verify"):
            w, rss = best[name]
            print(f"sifguard {name:<13} {w:7.3f} s  {size / w / 2**20:7.0f} MiB/s  peak RSS {rss:6.1f} MiB  "
                  f"ratio {w / o:.3f}")
        print(f"(python interpreter + import startup: {startup:.3f} s, included above)")


if __name__ == "__main__":
    main()
