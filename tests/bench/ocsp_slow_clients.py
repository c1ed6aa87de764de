#!/usr/bin/env python3
"""Latency of legitimate OCSP requests while slow clients hold connections:
`sifguard ca serve` (2 workers) next to `openssl ocsp -port` (the peer, as in
ocsp_throughput.py) and `openssl ocsp -port -multi 2 -timeout 5` (its hardened form:
two responder processes, a total per-request deadline), same CA and certificate,
all on 127.0.0.1.

For each server: sequential POSTs on new connections from one client (3 s timeout each)
for --seconds, first with no other client, then with --slow clients trickling a request
head one byte a second, then with --slow clients trickling a 60000-byte body the same
way (the slow clients reconnect whenever they are dropped, as an attacker would).
Prints p50/p99/max of the answered requests and how many failed. Bounded: a few
hundred connections, about (3 x seconds + 10) s per server.

Usage: tests/bench/ocsp_slow_clients.py [--slow 50] [--seconds 10]
"""
import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import benchlib  # noqa: E402
from slow_clients import SlowClients, legit_requests, percentile  # noqa: E402


def wait_up(url, body, proc):
    for _ in range(100):
        lat, _ = legit_requests(url, body, 0.5, max_count=1, timeout=1)
        if lat:
            return
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.args}")
        time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def stop(proc):
    """Stop a server this script started; `openssl ocsp -multi` makes itself a process
    group leader with its children in the group, so that group goes too."""
    if proc.poll() is not None:
        return
    group = os.getpgid(proc.pid) == proc.pid
    kill = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    kill(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        kill(signal.SIGKILL)
        proc.wait()
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def row(name, phase, lat, errors):
    ok = len(lat)
    p50 = f"{percentile(lat, 50) * 1000:8.1f}" if lat else "       -"
    p99 = f"{percentile(lat, 99) * 1000:8.1f}" if lat else "       -"
    mx = f"{max(lat) * 1000:8.1f}" if lat else "       -"
    why = ""
    if errors:
        kinds = collections.Counter(e.split(":")[0] for e in errors)
        why = "  " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(2))
    print(f"{name:<40} {phase:<30} {ok:6d} {len(errors):6d} {p50} {p99} {mx}{why}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow", type=int, default=50, help="slow clients per phase")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement time per phase")
    a = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as d:
        try:
            sg_port, o1_port, o2_port = benchlib.free_port(), benchlib.free_port(), benchlib.free_port()
            ca = benchlib.make_ca(d, sg_port)
            benchlib.openssl_index(d, f"{d}/b.pem", "b")
            body = subprocess.run(["openssl", "ocsp", "-issuer", f"{ca}/intermediate.pem", "-cert", f"{d}/leaf.pem",
                                   "-no_nonce", "-reqout", "/dev/stdout"], capture_output=True, check=True).stdout
            ossl = ["openssl", "ocsp", "-index", f"{d}/index.txt", "-rsigner", f"{ca}/ocsp-responder.pem",
                    "-rkey", f"{ca}/ocsp-responder.key", "-CA", f"{ca}/intermediate.pem", "-nmin", "60"]
            servers = [
                ("openssl ocsp -port (peer)", o1_port, ossl + ["-port", str(o1_port)]),
                ("openssl ocsp -port -multi 2 -timeout 5", o2_port,
                 ossl + ["-port", str(o2_port), "-multi", "2", "-timeout", "5"]),
                ("sifguard ca serve (2 workers)", sg_port,
                 benchlib.SG + ["ca", "serve", "--ca", ca, "--listen", f"127.0.0.1:{sg_port}", "--workers", "2"]),
            ]
            print(f"{os.cpu_count()} cores shared by servers and clients; sequential POSTs on new connections, "
                  f"3 s timeout, {a.seconds:g} s per phase, {a.slow} slow clients (1 byte/s)")
            print(f"{'server':<40} {'phase':<30} {'ok':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            for name, port, cmd in servers:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(proc)
                url = f"http://127.0.0.1:{port}/"
                wait_up(url, body, proc)
                lat, err = legit_requests(url, body, a.seconds / 2, timeout=3)
                row(name, "no slow clients", lat, err)
                for kind, label in (("header", "heads"), ("body", "bodies")):
                    with SlowClients(port, kind, a.slow, 1.0):
                        time.sleep(1.0)
                        lat, err = legit_requests(url, body, a.seconds, timeout=3)
                    row(name, f"{a.slow} slow {label}" + (" (server died)" if proc.poll() is not None else ""),
                        lat, err)
                    time.sleep(1.0)                # let the server shed what is left
                stop(proc)
        finally:
            for p in procs:
                stop(p)


if __name__ == "__main__":
    main()
