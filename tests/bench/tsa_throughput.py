#!/usr/bin/env python3
"""TSA throughput: time-stamp replies per second from `sifguard ca serve` /tsa (ab -k, POST
application/timestamp-query, concurrency 1 and 8) against `openssl ts -reply` making replies
for the same query in a loop (one process per reply, as a script-driven TSA would), on the
same CA, TSA certificate and key. Also the pure core (Authority.respond in this process).
Prints replies/s and the ratio to openssl.

Usage: tests/bench/tsa_throughput.py [--requests 3000] [--openssl-runs 200]
"""
import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import benchlib  # noqa: E402

SG = benchlib.SG


def ab(url, n, c, body):
    p = subprocess.run(["ab", "-q", "-k", "-t", "30", "-n", str(n), "-c", str(c), "-s", "10", "-p", body,
                        "-T", "application/timestamp-query", url], capture_output=True, text=True, timeout=60)
    if "Requests per second" not in p.stdout:
        raise RuntimeError(f"ab failed: {p.stderr.strip() or p.stdout[-300:]}")
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", p.stdout)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} non-2xx answers")
    return float(re.search(r"Requests per second:\s+([\d.]+)", p.stdout).group(1))


def openssl_config(d, ca, policy):
    path = f"{d}/ts.cnf"
    open(f"{d}/tsaserial", "w").write("01\n")
    open(path, "w").write(f"""[ tsa ]
default_tsa = site
[ site ]
serial = {d}/tsaserial
crypto_device = builtin
signer_cert = {ca}/tsa.pem
certs = {ca}/intermediate.pem
signer_key = {ca}/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
""")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--openssl-runs", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        port = benchlib.free_port()
        ca = f"{d}/ca"
        subprocess.run(SG + ["ca", "init", "--ca", ca, "--name", "Bench", "--url", f"http://127.0.0.1:{port}"],
                       check=True, capture_output=True, cwd=ROOT)
        policy = json.load(open(f"{ca}/ca.json"))["tsa_policy"]
        open(f"{d}/data", "wb").write(os.urandom(4096))
        q = f"{d}/q.tsq"
        subprocess.run(["openssl", "ts", "-query", "-data", f"{d}/data", "-sha256", "-cert", "-out", q],
                       check=True, capture_output=True)
        cnf = openssl_config(d, ca, policy)

        # the peer: openssl ts -reply, one process per reply
        cmd = ["openssl", "ts", "-reply", "-config", cnf, "-queryfile", q, "-out", f"{d}/r.tsr"]
        subprocess.run(cmd, check=True, capture_output=True)
        t = time.perf_counter()
        for _ in range(a.openssl_runs):
            subprocess.run(cmd, check=True, capture_output=True)
        ossl = a.openssl_runs / (time.perf_counter() - t)

        # the pure core in this process
        from sifguard.ca import store as castore, tsa
        from sifguard.ca.profiles import random_serial
        auth = tsa.load(castore.CAStore(ca))
        body = open(q, "rb").read()
        for _ in range(50):
            auth.respond(body, dt.datetime.now(dt.timezone.utc), random_serial())
        n = 1000
        t = time.perf_counter()
        for _ in range(n):
            auth.respond(body, dt.datetime.now(dt.timezone.utc), random_serial())
        core = n / (time.perf_counter() - t)

        print(f"127.0.0.1, {os.cpu_count()} cores shared by clients and servers; replies for one SHA-256 query "
              f"with nonce and certReq, EC P-256 TSA")
        print(f"{'openssl ts -reply (peer, a process per reply)':<48} {ossl:8.0f} replies/s  ratio  1.00")
        print(f"{'Authority.respond (pure core, in process)':<48} {core:8.0f} replies/s  ratio {core / ossl:5.2f}")
        with benchlib.responder(ca, port):
            url = f"http://127.0.0.1:{port}/tsa"
            ab(url, 200, 2, q)         # warm-up
            for c in (1, 8):
                rps = ab(url, a.requests, c, q)
                name = f"sifguard ca serve /tsa, ab -k c={c}"
                print(f"{name:<48} {rps:8.0f} replies/s  ratio {rps / ossl:5.2f}")


if __name__ == "__main__":
    main()
