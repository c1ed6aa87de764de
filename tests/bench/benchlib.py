"""Shared set-up for the benchmark scripts: a throw-away CA with its responder on
127.0.0.1, and policies whose caches are fresh per tag."""
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time

SG = [sys.executable, "-m", "sifguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(d: str, port: int, signer: str = "b") -> str:
    """CA in d/ca with its URL on 127.0.0.1:port, and a code-signing key/cert d/b.key, d/b.pem."""
    ca = f"{d}/ca"
    subprocess.run(SG + ["ca", "init", "--ca", ca, "--name", "Bench", "--url", f"http://127.0.0.1:{port}"],
                   check=True, capture_output=True)
    subprocess.run(SG + ["ca", "issue", "--ca", ca, "--cn", signer, "--out-key", f"{d}/b.key", "--out", f"{d}/b.pem"],
                   check=True, capture_output=True)
    return ca


def sign(d: str, image: str) -> None:
    subprocess.run(SG + ["sign", image, "--key", f"{d}/b.key", "--cert", f"{d}/b.pem"], check=True, capture_output=True)


@contextlib.contextmanager
def responder(ca: str, port: int):
    """`sifguard ca serve` for the CA, up before the block runs, stopped after it."""
    srv = subprocess.Popen(SG + ["ca", "serve", "--ca", ca, "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield srv
    finally:
        srv.terminate()
        srv.wait(10)


def openssl_index(d: str, bundle: str, cn: str) -> str:
    """For `openssl ocsp -index` as a peer responder: the leaf of `bundle` (written to
    d/leaf.pem, returned) listed as valid in d/index.txt."""
    import re
    leaf = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", open(bundle).read(), re.S)[0]
    path = f"{d}/leaf.pem"
    open(path, "w").write(leaf)
    serial = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                            capture_output=True, text=True).stdout.split("=")[1].strip()
    end = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-enddate"],
                         capture_output=True, text=True).stdout.split("=")[1].strip()
    expiry = time.strftime("%y%m%d%H%M%SZ", time.strptime(end, "%b %d %H:%M:%S %Y %Z"))
    open(f"{d}/index.txt", "w").write(f"V\t{expiry}\t\t{serial}\tunknown\t/CN={cn}\n")
    return path


def policy(d: str, ca: str, tag: str) -> str:
    """An enforcing policy trusting the CA, with OCSP and image caches of its own (per tag)."""
    path = f"{d}/policy-{tag}.yaml"
    with open(path, "w") as f:
        f.write(f"version: 1\ntrust: {{roots: [{ca}/root.pem]}}\nrevocation:\n  mode: enforce\n"
                f"  cache_dir: {d}/ocsp-{tag}\ncache: {{images: {d}/img-{tag}}}\naudit: {{log: {d}/audit.jsonl}}\n")
    return path


def compile_bytecode(root: str) -> None:
    """An installed package has bytecode (pip compiles it); an editable checkout under
    PYTHONDONTWRITEBYTECODE would recompile every module in every process measured."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "sifguard")], check=True)


def median_ms(fn, n: int = 7) -> float:
    """Median wall time of n calls of fn, in milliseconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)
