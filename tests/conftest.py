import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
SYLABS = os.path.join(DATA, "sylabs-sif")
APPT = os.path.join(DATA, "apptainer")


@pytest.fixture
def copy_vector(tmp_path):
    """Copy a vector into tmp_path (writable) and return the new path."""
    def _copy(rel: str, name: str | None = None) -> str:
        src = os.path.join(DATA, rel)
        dst = tmp_path / (name or os.path.basename(rel))
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
        return str(dst)
    return _copy


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


def run_cli(*args, env=None, input=None, timeout=120) -> Result:
    """Run the real `sifguard` CLI in a subprocess (as users and hooks do)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "sifguard", *map(str, args)], capture_output=True,
                       text=True, env=e, input=input, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def cli():
    return run_cli


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, grace=10):
    """SIGTERM, then SIGKILL after `grace` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class OpensslOcsp:
    """`openssl ocsp` as an independent responder on 127.0.0.1, ready when constructed.

    Readiness is a real OCSP request for (cert, issuer): openssl serves one connection at a
    time and stalls on one that closes without a request, so a bare connect is no probe. A
    process that exits (a port taken between free_port() and its bind) is restarted on a new
    port, at most three times; its stderr is in the error if it never comes up."""

    def __init__(self, index, rsigner, rkey, ca, probe, *extra, wait=30.0):
        import tempfile
        import time
        self.proc = None
        errors = []
        for _ in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}/"
            log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(["openssl", "ocsp", "-index", str(index), "-port", str(self.port),
                                          "-rsigner", str(rsigner), "-rkey", str(rkey), "-CA", str(ca),
                                          *map(str, extra)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log.seek(0)
                    errors.append(log.read().decode(errors="replace").strip()[-500:])
                    break
                if self._answers(probe):
                    return
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(f"openssl ocsp on port {self.port} did not answer in {wait:.0f} s")
        raise RuntimeError(f"openssl ocsp exited three times: {errors}")

    def _answers(self, probe) -> bool:
        import urllib.request
        try:
            urllib.request.urlopen(urllib.request.Request(self.url, data=probe, headers={
                "Content-Type": "application/ocsp-request"}), timeout=2).read()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)


def ocsp_probe(cert, issuer) -> bytes:
    """A DER OCSP request about cert, to probe a responder with."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)


class Server:
    """`sifguard ca serve` as a real process on 127.0.0.1; stopped by PID."""

    def __init__(self, ca_dir, *extra, port=None):
        import time
        import urllib.request
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        import tempfile
        self.log = tempfile.NamedTemporaryFile(prefix="ca-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "sifguard", "ca", "serve", "--ca", str(ca_dir),
                                      "--listen", f"127.0.0.1:{self.port}", "--workers", "2", *extra],
                                     stdout=subprocess.DEVNULL, stderr=self.log)   # a file: a full pipe would stall it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ca serve exited: {open(self.log.name).read()[-2000:]}")
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("ca serve did not come up in 20 s")

    def stop(self):
        stop_process(self.proc)
        try:
            os.unlink(self.log.name) if not os.environ.get("KEEP_SERVE_LOG") else None
        except OSError:
            pass


def issue_and_sign(ca, d, who):
    """`ca issue` a code-signing certificate for `who` (key d/who.key, chain d/who.pem) and
    `sign` a copy of the one-group vector with it (d/who.sif): (leaf, issuer) certificates."""
    import shutil
    from cryptography import x509
    assert run_cli("ca", "issue", "--ca", ca, "--cn", who, "--email", f"{who}@example.org",
                   "--out-key", d / f"{who}.key", "--out", d / f"{who}.pem").rc == 0
    img = d / f"{who}.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), img)
    assert run_cli("sign", img, "--key", d / f"{who}.key", "--cert", d / f"{who}.pem").rc == 0
    leaf, inter = split_pem(d / f"{who}.pem")
    return x509.load_pem_x509_certificate(leaf.encode()), x509.load_pem_x509_certificate(inter.encode())


def ca_site(d, name, people, *init_args):
    """A CA made by `ca init` in d/ca whose URL is a free port on 127.0.0.1 (nothing serves it
    yet), and for each of `people` a certificate and a signed image (issue_and_sign).
    A dict: d, ca, root (path), port, issuer, and each person's leaf certificate."""
    port = free_port()
    ca = d / "ca"
    r = run_cli("ca", "init", "--ca", ca, "--name", name, "--url", f"http://127.0.0.1:{port}", *init_args)
    assert r.rc == 0, r
    out = {"d": d, "ca": ca, "root": str(ca / "root.pem"), "port": port}
    for who in people:
        out[who], out["issuer"] = issue_and_sign(ca, d, who)
    return out


def responder_policy(path, site, mode="enforce", url=None, crl=False, audit=None, tail=""):
    """A policy file at `path` trusting a ca_site's root, asking `url` (default the site's own
    responder) with 1 s and no retries, a fresh revocation cache, no image cache; `tail`:
    more top-level YAML."""
    import time
    path.write_text(f"""
version: 1
trust: {{roots: [{site['root']}]}}
revocation:
  mode: {mode}
  timeout: 1
  retries: 0
  crl_fallback: {'true' if crl else 'false'}
  cache_dir: {path.parent}/rc-{time.monotonic_ns()}
  responders: [{{issuer: "*", url: "{url or site['url'] + '/'}"}}]
cache: {{images: off}}
audit: {{log: {audit or path.parent / 'audit.jsonl'}}}
{tail}""")
    return str(path)


def split_pem(path):
    import re
    text = open(path).read()
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", text, re.S)
