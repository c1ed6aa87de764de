#!/usr/bin/env python3
"""OCSP throughput: `sifguard ca serve` and its static export behind nginx, against
`openssl ocsp` (the peer: OpenSSL's single-process responder) on the same CA and
certificate, all on 127.0.0.1, driven by the same `ab -k` load (concurrency 8 and
32, bounded count and time). Prints requests/s and the ratio to openssl.

Needs root (or preinstalled `ab` and `nginx`): installs apache2-utils and nginx when missing.
Usage: tests/bench/ocsp_throughput.py [--requests 20000]
"""
import argparse
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SG = [sys.executable, "-m", "sifguard"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(p, proc, body):
    """Probe with a real request: `openssl ocsp` serves one connection at a time and
    stalls on a connection that closes without sending one."""
    import urllib.request
    for _ in range(200):
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{p}/", data=body, headers={"Content-Type": "application/ocsp-request"}),
                timeout=1).read()
            return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited: {proc.args}")
            time.sleep(0.05)
    sys.exit("server did not start")


def ab(url, n, c, post=None, keepalive=True):
    """Requests/s from ApacheBench with keep-alive offered (-k): a server that closes
    after each answer (openssl ocsp speaks HTTP/1.0) just gets a new connection.
    Without keep-alive every request opens a connection (as `openssl ocsp` and one-shot
    clients do). Bounded by count and by a 30 s time limit."""
    cmd = ["ab", "-q"] + (["-k"] if keepalive else []) + ["-t", "30", "-n", str(n), "-c", str(c), "-s", "10"]
    if post:
        cmd += ["-p", post, "-T", "application/ocsp-request"]
    p = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=60)
    out = p.stdout
    if "Requests per second" not in out:
        raise RuntimeError(f"ab failed against {url}: {p.stderr.strip() or out[-300:]}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    # ab counts a body whose length differs from the first one as "failed (Length)": ECDSA
    # signatures vary in length, so only connect/receive/exception failures count here.
    m = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: \d+, Exceptions: (\d+)\)", out)
    failed = sum(map(int, m.groups())) if m else 0
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    done = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
    return rps, failed + (int(non2xx.group(1)) if non2xx else 0), done


def ensure_tools():
    missing = [pkg for tool, pkg in (("ab", "apache2-utils"), ("nginx", "nginx")) if not shutil.which(tool)
               and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"need {' '.join(missing)} (run as root to install)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000, help="requests per run (each run also capped at 30 s)")
    a = ap.parse_args()
    ensure_tools()
    procs = []
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)   # nginx workers run unprivileged and read the export under it
        try:
            sg_port, ossl_port, ngx_port = port(), port(), port()
            ca = f"{d}/ca"
            subprocess.run(SG + ["ca", "init", "--ca", ca, "--name", "Bench", "--url", f"http://127.0.0.1:{sg_port}"],
                           check=True, capture_output=True)
            subprocess.run(SG + ["ca", "issue", "--ca", ca, "--cn", "bench", "--out-key", f"{d}/b.key",
                                 "--out", f"{d}/b.pem"], check=True, capture_output=True)
            # openssl's index.txt for the same certificate
            benchlib.openssl_index(d, f"{d}/b.pem", "bench")
            # the request every contender answers: SHA-1 CertID, no nonce (RFC 5019 profile)
            subprocess.run(["openssl", "ocsp", "-issuer", f"{ca}/intermediate.pem", "-cert", f"{d}/leaf.pem",
                            "-no_nonce", "-reqout", f"{d}/req.der"], check=True, capture_output=True)
            b64 = base64.b64encode(open(f"{d}/req.der", "rb").read()).decode()

            ossl = subprocess.Popen(["openssl", "ocsp", "-index", f"{d}/index.txt", "-port", str(ossl_port),
                                     "-rsigner", f"{ca}/ocsp-responder.pem", "-rkey", f"{ca}/ocsp-responder.key",
                                     "-CA", f"{ca}/intermediate.pem", "-nmin", "60"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(ossl)
            sg = subprocess.Popen(SG + ["ca", "serve", "--ca", ca, "--listen", f"127.0.0.1:{sg_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(sg)
            subprocess.run(SG + ["ca", "export-ocsp", "--ca", ca, "--out", f"{d}/www"], check=True, capture_output=True)
            conf = open(os.path.join(ROOT, "config", "nginx-ocsp.conf")).read()
            conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{ngx_port};").replace("/var/www/sifguard-ocsp", f"{d}/www")
            open(f"{d}/nginx.conf", "w").write(
                f"worker_processes auto; pid {d}/nginx.pid; error_log {d}/nginx.err; daemon off;\n"
                f"events {{ worker_connections 1024; }}\nhttp {{ access_log off; client_body_temp_path {d}/nb;\n"
                f"proxy_temp_path {d}/np; fastcgi_temp_path {d}/nf; uwsgi_temp_path {d}/nu; scgi_temp_path {d}/ns;\n{conf}\n}}\n")
            ngx = subprocess.Popen(["nginx", "-c", f"{d}/nginx.conf", "-p", d], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            procs.append(ngx)
            body = open(f"{d}/req.der", "rb").read()
            for p, pr in ((ossl_port, ossl), (sg_port, sg)):
                wait_up(p, pr, body)
            time.sleep(0.5)  # nginx
            contenders = [
                ("openssl ocsp (peer, POST)", f"http://127.0.0.1:{ossl_port}/", f"{d}/req.der"),
                ("sifguard ca serve (POST)", f"http://127.0.0.1:{sg_port}/", f"{d}/req.der"),
                ("sifguard ca serve (GET)", f"http://127.0.0.1:{sg_port}/{b64}", None),
                ("export-ocsp + nginx (GET)", f"http://127.0.0.1:{ngx_port}/{b64}", None),
            ]
            for name, url, post in contenders:      # warm-up
                ab(url, 200, 2, post)
            print(f"ab -k, {a.requests} requests per run, 127.0.0.1, {os.cpu_count()} cores "
                  "(load generator and servers share them)")
            for c in (8, 32):
                base = None
                for name, url, post in contenders:
                    rps, bad, done = ab(url, a.requests, c, post)
                    base = base or rps
                    print(f"c={c:<3} {name:<28} {rps:9.0f} req/s  ratio {rps / base:5.2f}  "
                          f"({done} requests, {bad} errors)")
            print("ab without -k: a new connection for every request")
            for c in (8, 32):
                base = None
                for name, url, post in contenders[:2]:
                    try:
                        rps, bad, done = ab(url, a.requests // 2, c, post, keepalive=False)
                    except RuntimeError as e:     # openssl ocsp stalls under c=32 new connections
                        print(f"c={c:<3} {name:<28} failed: {str(e)[:90]}")
                        continue
                    base = base or rps
                    print(f"c={c:<3} {name:<28} {rps:9.0f} req/s  ratio {rps / base:5.2f}  "
                          f"({done} requests, {bad} errors)")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        sys.exit(str(e))
