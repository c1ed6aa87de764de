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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.log.name) if not os.environ.get("KEEP_SERVE_LOG") else None
        except OSError:
            pass


def split_pem(path):
    import re
    text = open(path).read()
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", text, re.S)
