"""The verified image store (issue 9): behaviour against real parts.

Real SIF images (sifguard.sif.image.create), signed with real certificates (tests/pki.py),
a real stager process (`sifguard store serve`, started per test and killed in the
finalizer), real hooks installed by `sifguard slurm install --store … --stager-socket …`
and run as unprivileged users (nobody, uid 1000) through setpriv. Apptainer cannot be
installed here, so the runtime the shim execs is a stand-in shell script that records its
uid, the image operand it was given and the SHA-256 of the bytes behind it.

The hooks run as users, who may not be able to enter the directory of the Python running
the tests (a 0700 home): then they get one of their own, a venv of /usr/bin/python3 holding
copies of sifguard's dependencies (fixture `user_python`). What users must reach lives under
one /tmp directory of this session's (`shared_base`), not /tmp/pytest-of-root, which any new
pytest session of root's resets to 0700.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import run_cli
from pki import SiteChain
from sifguard.errors import SifFormatError
from sifguard.integrity.sign import Signer, sign_image
from sifguard.sif.image import NewObject, SifImage, create
from sifguard.store import client, keys, locks, records, wire
from sifguard.store.copy import copy_hashing
from sifguard.store.layout import Store, StoreError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NOBODY = (65534, 65534)
USER1000 = (1000, 1000)
DEFAULT_RULE = "default (built-in)"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store is root-owned: these tests run as root")


# --- images ---------------------------------------------------------------------------
def make_sif(path, payload: bytes | int = 40000, objects: int = 1) -> str:
    """A SIF: a definition file, a partition, and `objects - 1` generic data objects.
    `payload`: the partition's bytes; or an int: that many random bytes (>= 1 KiB), or
    below 1024 a size in MiB (random, not sparse, streamed) for big images."""
    path = str(path)
    objs = [NewObject(0x4001, data=b"Bootstrap: scratch\n" + os.urandom(8).hex().encode(), group=1)]
    part = None
    if isinstance(payload, int) and payload >= 1 << 10:
        payload = os.urandom(payload)
    if isinstance(payload, int):
        part = path + ".part"
        block = os.urandom(1 << 20)
        with open(part, "wb") as f:
            for _ in range(payload):
                f.write(block)
        objs.append(NewObject(0x4004, path=part, group=1, extra=struct.pack("<ii", 1, 2) + b"02\x00"))
    else:
        objs.append(NewObject(0x4004, data=payload, group=1, extra=struct.pack("<ii", 1, 2) + b"02\x00"))
    for i in range(1, objects):
        objs.append(NewObject(0x4007, data=os.urandom(5000 + 1000 * i), group=1))   # generic data
    try:
        create(path, objs)
    finally:
        if part:
            os.unlink(part)
    os.chmod(path, 0o644)
    return path


def sign(path, chain: SiteChain) -> str:
    sign_image(str(path), [Signer(chain.leaf_key, (chain.leaf, chain.inter))])
    return str(path)


def sha_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def object_ranges(path) -> list[tuple[int, int, int]]:
    with SifImage(str(path)) as img:
        return sorted((d.offset, d.size, d.id) for d in img.objects)


@pytest.fixture(scope="session")
def shared_base():
    """A directory every user can traverse, for what the hooks' users must reach. Not under
    /tmp/pytest-of-root: each new pytest session of root's (another checkout's, say) resets
    that to 0700 while this one runs."""
    d = tempfile.mkdtemp(prefix="sg-store-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def users_dir(base, name: str) -> pathlib.Path:
    # short: the stager's socket goes in it, and AF_UNIX paths end at 107 bytes
    d = tempfile.mkdtemp(prefix=re.sub(r"[^A-Za-z0-9_.-]+", "-", name.removeprefix("test_"))[:20] + "-", dir=base)
    os.chmod(d, 0o755)
    return pathlib.Path(d)


# --- a Python the job's users can run ----------------------------------------------------
def _requirements(name: str, seen: dict) -> None:
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return
    seen[key] = dist
    for req in dist.requires or ():
        if "extra ==" in req:
            continue
        _requirements(re.match(r"[A-Za-z0-9_.\-]+", req).group(0), seen)


def _usable_by_nobody(py: str, paths: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py, "-IS", "-c",
                           f"import sys; sys.path[:0] = {[REPO, *paths]!r}; import yaml, cryptography, requests, "
                           "sifguard.enforce.decide"], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def user_python(shared_base):
    """The interpreter the hooks are installed with: this one if every user can run it with
    its packages; else a venv of /usr/bin/python3 (same version) holding copies of sifguard's
    dependencies, readable by all (sifguard itself comes from this checkout)."""
    import site as site_mod
    if _usable_by_nobody(sys.executable, site_mod.getsitepackages()).returncode == 0:
        return sys.executable
    system = "/usr/bin/python3"
    ver = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True,
                         timeout=60).stdout.strip() if os.access(system, os.X_OK) else ""
    if ver != str(tuple(sys.version_info[:2])):
        pytest.skip(f"no Python {sys.version_info[:2]} every user can run for the hooks (this one is in a "
                    "directory they cannot enter)")
    d = users_dir(shared_base, "userpy")
    venv = d / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120, capture_output=True)
    py = str(venv / "bin" / "python")
    sp = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                        text=True, check=True, timeout=60).stdout.strip()
    seen: dict = {}
    for name in ("cryptography", "requests", "pyyaml", "tree-sitter", "tree-sitter-bash"):
        _requirements(name, seen)
    for dist in seen.values():
        for f in dist.files or ():
            src = str(dist.locate_file(f))
            if ".." in str(f) or not os.path.isfile(src):
                continue
            dst = os.path.join(sp, str(f))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    subprocess.run(["chmod", "-R", "a+rX", str(d)], check=True, timeout=60)
    p = _usable_by_nobody(py, [sp])
    if p.returncode != 0:
        pytest.skip(f"the users' Python cannot import sifguard: {p.stderr.strip()[-300:]}")
    return py


@pytest.fixture(scope="module")
def chain(shared_base):
    return SiteChain(users_dir(shared_base, "pki"))


@pytest.fixture(scope="module")
def big_signed(shared_base, chain):
    """A signed 320 MiB image (random bytes): staging it takes a moment."""
    return sign(make_sif(users_dir(shared_base, "big") / "big.sif", 320), chain)


# --- the stager ---------------------------------------------------------------------------
_REQ = re.compile(r"sifguard-stager: uid (\d+) pid (\d+): (\S+)")


class Stager:
    """`sifguard store serve` as a real process; its stderr goes to a file we read."""

    def __init__(self, store, sock, log, *extra):
        self.sock, self.log = str(sock), str(log)
        self._start = len(self.text())            # a restarted stager appends to its predecessor's log
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "sifguard", "store", "serve", "--store", str(store),
                                          "--socket", self.sock, *extra], stdout=subprocess.DEVNULL, stderr=err,
                                         cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
        self._ready()

    def _ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the stager exited: {self.text()[-2000:]}")
            if "serving store" in self.text()[self._start:] and os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("the stager did not come up in 30 s")

    def text(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def requests(self) -> list[tuple[int, str]]:
        """(uid, how) for each request this stager answered, in order; how is
        indexed|staged|waited|deduplicated|error."""
        return [(int(m.group(1)), m.group(3)) for m in _REQ.finditer(self.text()[self._start:])]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@pytest.fixture
def stagers():
    started: list[Stager] = []
    yield started
    for s in started:
        s.kill(signal.SIGTERM)


# --- a node: store, policy, hooks ------------------------------------------------------------
STANDIN = """#!/bin/sh
# stand-in for apptainer: records who ran it, the image operand, the SHA-256 of its bytes
img=$2
printf '%s %s %s\\n' "$(id -u)" "$img" "$(sha256sum < "$img" 2>/dev/null | cut -c1-64)" >> {log}
if [ -n "$STANDIN_SLEEP" ]; then sleep "$STANDIN_SLEEP"; fi
exit 0
"""


class Site:
    def __init__(self, root, chain, user_python, stagers):
        self.root, self.chain, self.python, self._stagers = root, chain, user_python, stagers
        self.store = str(root / "store")
        (root / "run").mkdir(mode=0o755)
        self.sock = str(root / "run" / "stager.sock")
        self.stager_log = str(root / "stager.err")
        self.policy = str(root / "policy.yaml")
        self.log = root / "ran.log"
        self.log.write_text("")
        os.chmod(self.log, 0o666)
        self.standin = root / "apptainer-real"
        self.standin.write_text(STANDIN.format(log=self.log))
        os.chmod(self.standin, 0o755)
        self.shim_path = ""

    # policy and hooks
    def policy_text(self, rules: str = "", roots: str | None = None) -> str:
        return (f"version: 1\ntrust: {{roots: [{roots or self.chain.root_pem}]}}\nrevocation: {{mode: off}}\n"
                f"cache: {{images: off}}\n{rules}")

    def install(self, rules: str = "", *extra, store: str | None = None, sock: str | None = None,
                roots: str | None = None) -> str:
        with open(self.policy, "w") as f:
            f.write(self.policy_text(rules, roots))
        os.chmod(self.policy, 0o644)
        store = self.store if store is None else store
        sock = self.sock if sock is None else sock
        args = ["--store", store] if store else []
        if sock:
            args += ["--stager-socket", sock]
        r = run_cli("slurm", "install", "--prefix", self.root / "hooks", "--policy", self.policy,
                    "--apptainer", self.standin, "--singularity", self.standin, "--no-spank",
                    "--slurm-conf", self.root / "slurm.conf", "--python", self.python, *args, *extra,
                    env={"PYTHONPATH": REPO})
        assert r.rc == 0, r
        self.shim_path = str(self.root / "hooks" / "shim" / "apptainer")
        return self.shim_path

    def start_stager(self, *extra) -> Stager:
        s = Stager(self.store, self.sock, self.stager_log, *extra)
        self._stagers.append(s)
        return s

    # images
    def image(self, name: str, payload: bytes | int = 40000, signed: bool = True, mode: int = 0o644) -> str:
        p = make_sif(self.root / name, payload)
        if signed:
            sign(p, self.chain)
        os.chmod(p, mode)
        return p

    # running
    def shim_cmd(self, *args, user=NOBODY) -> list[str]:
        cmd = [self.shim_path, *map(str, args)]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *cmd]
        return cmd

    def shim(self, *args, user=NOBODY, env=None, timeout=120) -> subprocess.CompletedProcess:
        p = subprocess.run(self.shim_cmd(*args, user=user), capture_output=True, text=True, timeout=timeout,
                           cwd=self.root, env=dict(os.environ, **(env or {})))
        assert "Traceback" not in p.stderr, p.stderr
        return p

    def runs(self) -> list[tuple[int, str, str]]:
        """(uid, image operand, sha256 of what the runtime read) per runtime start."""
        out = []
        for line in self.log.read_text().splitlines():
            uid, img, *digest = line.split(" ")
            out.append((int(uid), img, digest[0] if digest else ""))
        return out

    # the store's contents
    def ls(self, sub: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(os.path.join(self.store, sub)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def objects(self) -> list[str]:
        return [n for n in self.ls("objects") if n.endswith(".sif")]

    def object_path(self, digest: str) -> str:
        return os.path.join(self.store, "objects", digest + ".sif")


@pytest.fixture
def site(request, shared_base, chain, user_python, stagers):
    return Site(users_dir(shared_base, request.node.name), chain, user_python, stagers)


def one_line_refusal(p) -> None:
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("sifguard: "), p.stderr


def as_user(uid_gid, fn):
    """Run fn() in a forked child with the user's uid/gid and no groups; its JSON-able
    result (or the exception it raised, as {"exception", "message"})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: never return into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid_gid[1], uid_gid[1], uid_gid[1])
            os.setresuid(uid_gid[0], uid_gid[0], uid_gid[0])
            try:
                out = {"result": fn()}
            except BaseException as e:  # noqa: BLE001
                out = {"exception": type(e).__name__, "message": str(e)}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"exception": "died", "message": ""}')


def ask_path(sock, path, request, flags=os.O_RDONLY | os.O_NONBLOCK):
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        return client.ask(sock, fd, request, timeout=120)
    finally:
        os.close(fd)


# ================================================================================================
# 1. one pass: copy while hashing
# ================================================================================================
def _copy(path, tmp_dir) -> tuple:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        c = copy_hashing(fd, str(tmp_dir), durable=False)
    finally:
        os.close(fd)
    try:
        copied = os.pread(c.fd, c.size + 1, 0)
    finally:
        os.close(c.fd)
    return c, copied


@pytest.mark.parametrize("objects", [1, 3])
def test_copy_digests_are_each_objects_sha256_and_every_byte_is_hashed_once(tmp_path, objects):
    src = make_sif(tmp_path / "img.sif", os.urandom(70000 + objects), objects=objects)
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir(mode=0o700)
    c, copied = _copy(src, tmp_dir)
    data = open(src, "rb").read()
    assert copied == data                                   # the copy is the source, byte for byte
    ranges = object_ranges(src)
    assert len(ranges) == objects + 1 and set(c.objects) == {oid for _, _, oid in ranges}
    for off, n, oid in ranges:
        assert c.objects[oid] == "sha256:" + hashlib.sha256(data[off:off + n]).hexdigest()
    assert c.bytes_hashed == c.size == len(data) == os.path.getsize(src)
    assert not c.source_changed
    assert re.fullmatch(r"[0-9a-f]{64}", c.digest)
    assert os.listdir(tmp_dir) == []                         # an unnamed file: nothing left in tmp/


def _flip(path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))


@pytest.mark.parametrize("where", ["first object", "last object", "header padding", "alignment gap",
                                   "header uuid", "launch script", "last byte"])
def test_content_digest_same_for_identical_bytes_and_changes_with_any_byte(tmp_path, where):
    src = make_sif(tmp_path / "a.sif", os.urandom(50000), objects=2)
    twin = tmp_path / "elsewhere" / "b.sif"
    twin.parent.mkdir()
    shutil.copyfile(src, twin)
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir(mode=0o700)
    c1, _ = _copy(src, tmp_dir)
    c2, _ = _copy(str(twin), tmp_dir)
    assert c1.digest == c2.digest and c1.objects == c2.objects     # same bytes, another path/inode
    ranges = object_ranges(src)
    size = os.path.getsize(src)
    at = {"first object": ranges[0][0] + ranges[0][1] // 2,
          "last object": ranges[-1][0] + ranges[-1][1] - 1,
          "header padding": 1000,                                    # between header and descriptors
          "alignment gap": ranges[0][0] + ranges[0][1] + 7,          # before the 4 KiB-aligned partition
          "header uuid": 50,
          "launch script": 3,
          "last byte": size - 1}[where]
    covered = [(off, off + n) for off, n, _ in ranges]
    in_object = any(s <= at < e for s, e in covered)
    assert in_object == (where in ("first object", "last object", "last byte"))
    _flip(str(twin), at)
    c3, copied = _copy(str(twin), tmp_dir)
    assert c3.digest != c1.digest, where
    assert copied == open(twin, "rb").read()
    changed = {oid for oid in c1.objects if c1.objects[oid] != c3.objects[oid]}
    assert len(changed) == (1 if in_object else 0)                  # only the object holding the byte
    assert c3.bytes_hashed == size
    assert os.listdir(tmp_dir) == []


@pytest.mark.parametrize("content", [b"", b"not a sif at all\n" * 100, b"SIF_MAGIC" + bytes(4000)])
def test_copy_of_a_non_sif_file_fails_and_leaves_nothing(tmp_path, content):
    src = tmp_path / "junk.sif"
    src.write_bytes(content)
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir(mode=0o700)
    with pytest.raises(SifFormatError):
        _copy(str(src), tmp_dir)
    assert os.listdir(tmp_dir) == []


def test_copy_of_a_file_that_shrinks_while_copied_fails_and_leaves_nothing(tmp_path, big_signed):
    """The source is truncated as soon as the staging file exists (seen in /proc/self/fd)."""
    src = tmp_path / "shrinking.sif"
    shutil.copyfile(big_signed, src)
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir(mode=0o700)
    fired = threading.Event()
    stop = threading.Event()

    def truncate_when_copying():
        while not stop.is_set():
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(str(tmp_dir) + "/"):
                    os.truncate(src, 64 << 10)
                    fired.set()
                    return
    t = threading.Thread(target=truncate_when_copying)
    t.start()
    try:
        with pytest.raises((StoreError, SifFormatError)) as e:
            _copy(str(src), tmp_dir)
    finally:
        stop.set()
        t.join()
    assert fired.is_set(), "the copy finished before the source could be truncated"
    assert "shrank" in str(e.value) or "changed" in str(e.value), e.value
    assert os.listdir(tmp_dir) == []


# ================================================================================================
# 2. staging through the stager: one copy for every user and every concurrent task
# ================================================================================================
@pytest.mark.parametrize("variant", ["same file", "same bytes at another path", "user-specific rule"])
def test_two_users_share_one_staged_copy(site, variant):
    """nobody then uid 1000 run the same image: one digest, one object, the second request
    is answered from the store (warm, indexed or deduplicated), never copied again."""
    rules = ("rules:\n  - name: cloudsdk\n    match: {user: cloudsdk}\n" if variant == "user-specific rule" else "")
    site.install(rules)
    stager = site.start_stager()
    img = site.image("app.sif")
    second = img
    if variant == "same bytes at another path":
        (site.root / "other").mkdir(mode=0o755)
        second = str(site.root / "other" / "copy.sif")
        shutil.copyfile(img, second)
        os.chmod(second, 0o644)
    p1 = site.shim("exec", img, "true", user=NOBODY)
    p2 = site.shim("exec", second, "true", user=USER1000)
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr, p2.stderr)
    (u1, run1, d1), (u2, run2, d2) = site.runs()
    assert (u1, u2) == (65534, 1000)
    digest = os.path.basename(run1)[:-len(".sif")]
    assert run1 == run2 == site.object_path(digest)          # both ran the store's copy
    assert d1 == d2 == sha_file(img)                          # holding the image's bytes
    assert site.objects() == [digest + ".sif"]
    reqs = stager.requests()
    assert [h for _, h in reqs].count("staged") == 1 and reqs[0] == (65534, "staged"), reqs
    expected_second = {"same file": [], "same bytes at another path": [(1000, "deduplicated")],
                       "user-specific rule": [(1000, "indexed")]}[variant]
    assert reqs[1:] == expected_second, reqs
    st = os.stat(site.object_path(digest))
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o444


def test_concurrent_tasks_of_one_cold_image_stage_it_once(site):
    """12 tasks (two users) start at once on an image nobody has staged: one staging,
    the others wait on it or find it indexed; all run the same verified copy."""
    site.install()
    stager = site.start_stager()
    img = site.image("cold.sif", 24)         # 24 MiB: long enough for the others to queue
    procs = [subprocess.Popen(site.shim_cmd("exec", img, "true", user=(NOBODY, USER1000)[i % 2]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=site.root)
             for i in range(12)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    runs = site.runs()
    assert len(runs) == 12
    assert {r[1] for r in runs} == {site.object_path(site.objects()[0][:-4])}
    assert {r[2] for r in runs} == {sha_file(img)}
    assert len(site.objects()) == 1 and len(site.ls("index")) == 1
    hows = [h for _, h in stager.requests()]
    assert hows.count("staged") == 1, hows
    assert set(hows) <= {"staged", "waited", "indexed"}, hows


def test_a_burst_of_tasks_beyond_the_per_user_connection_limit_all_run(site):
    """One job step starts more tasks of a cold image on a node than the stager takes
    connections from one user (32): they wait their turn, none is refused."""
    site.install()
    stager = site.start_stager()
    img = site.image("cold.sif", 64)
    procs = [subprocess.Popen(site.shim_cmd("exec", img, "true"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=site.root) for _ in range(48)]
    outs = [p.communicate(timeout=300) for p in procs]
    refused = [e for (_, e), p in zip(outs, procs) if p.returncode != 0]
    assert refused == [], (len(refused), refused[:2])
    assert len(site.runs()) == 48 and {r[2] for r in site.runs()} == {sha_file(img)}
    assert len(site.objects()) == 1 and [h for _, h in stager.requests()].count("staged") == 1


# ================================================================================================
# 3. a file the user cannot read is never staged on their behalf
# ================================================================================================
@pytest.mark.parametrize("mode,owner", [(0o600, (0, 0)), (0o640, (0, 0)), (0o600, USER1000)])
def test_unreadable_image_is_refused_and_nothing_is_staged(site, mode, owner):
    site.install()
    stager = site.start_stager()
    img = site.image("secret.sif", mode=mode)
    os.chown(img, *owner)
    p = site.shim("exec", img, "true", user=NOBODY)
    one_line_refusal(p)
    assert "cannot read it as the job's user" in p.stderr
    assert site.runs() == []
    assert site.objects() == [] and site.ls("index") == [] and site.ls("decisions") == []
    assert stager.requests() == []                          # the stager was never asked


# ================================================================================================
# 4. what the stager is sent must be a regular file the sender could read
# ================================================================================================
def _good_request(site, stager):
    good = site.image("good.sif")
    r = ask_path(site.sock, good, {"policy": site.policy, "path": good, "context": {}})
    assert r["ok"] and r["allowed"] and r["how"] == "staged", r
    assert os.path.exists(site.object_path(r["digest"]))
    assert stager.alive()


@pytest.mark.parametrize("kind", ["fifo", "socket", "/dev/null", "/dev/zero", "directory"])
def test_stager_refuses_a_descriptor_that_is_not_a_regular_file(site, kind):
    site.install()
    stager = site.start_stager()
    words = {"fifo": "a FIFO", "socket": "a socket", "/dev/null": "a device", "/dev/zero": "a device",
             "directory": "a directory"}[kind]
    sock = None
    if kind == "fifo":
        os.mkfifo(site.root / "fifo")
        fd = os.open(site.root / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = sock.fileno()
    elif kind == "directory":
        fd = os.open(site.root, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(kind, os.O_RDONLY)
    try:
        with pytest.raises(client.StagerRefused) as e:
            client.ask(site.sock, fd, {"policy": site.policy, "path": str(site.root / "x.sif"), "context": {}},
                       timeout=30)
    finally:
        if sock is not None:
            sock.close()
        else:
            os.close(fd)
    assert "not a regular file" in str(e.value) and words in str(e.value), e.value
    assert site.objects() == [] and site.ls("index") == []
    assert stager.alive()
    _good_request(site, stager)


@pytest.mark.parametrize("how", ["O_PATH", "O_WRONLY"])
def test_stager_never_reads_what_the_sender_could_not(site, how):
    """A user may hold a descriptor on a file without read access (O_PATH on a root-only
    file, O_WRONLY on a file they may only write): the stager, though root, cannot read
    through it, and stages nothing."""
    site.install()
    stager = site.start_stager()
    img = site.image("root-only.sif", mode=0o600 if how == "O_PATH" else 0o622)
    flags = os.O_PATH if how == "O_PATH" else os.O_WRONLY

    def send():
        fd = os.open(img, flags | os.O_CLOEXEC)
        try:
            return client.ask(site.sock, fd, {"policy": site.policy, "path": img, "context": {}}, timeout=30)
        finally:
            os.close(fd)
    out = as_user(NOBODY, send)
    assert out.get("exception") == "StagerRefused", out
    assert site.objects() == [] and site.ls("index") == [] and site.ls("decisions") == []
    assert stager.alive()
    _good_request(site, stager)


def test_stager_never_reads_a_policy_file_for_a_user_who_could_not(site):
    """The request names the policy by path and the stager (root) loads it: a user naming a
    root-only file (a 0600 one, one in a 0700 directory, /etc/shadow) must get neither its
    contents (a parse error quotes them) nor whether it exists — one answer for all."""
    site.install()
    stager = site.start_stager()
    img = site.image("img.sif")
    secret_dir = site.root / "private"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "conf.yaml").write_text("api_key: SECRET-TOKEN-1234\n")
    loose = site.root / "root-only.yaml"
    loose.write_text("root:$6$SECRET-HASH-5678:19000:0:99999:7:::\n")
    os.chmod(loose, 0o600)
    shutil.copyfile(site.policy, secret_dir / "policy.yaml")        # a valid policy, but not the users' to read
    names = [str(loose), str(secret_dir / "conf.yaml"), str(secret_dir / "policy.yaml"),
             str(secret_dir / "no-such.yaml"), "/etc/shadow"]

    def ask_each():
        out = []
        for pol in names:
            try:
                out.append(ask_path(site.sock, img, {"policy": pol, "path": img, "context": {}}))
            except client.StagerRefused as e:
                out.append(str(e))
        return out
    answers = as_user(NOBODY, ask_each)["result"]
    for pol, answer in zip(names, answers):
        assert answer == f"policy {pol} is not a file every user can read: not used", answer
    assert site.objects() == [] and site.ls("decisions") == []
    # root may name any root-owned policy (the controller prolog asks on users' behalf)
    r = ask_path(site.sock, img, {"policy": str(secret_dir / "policy.yaml"), "path": img, "context": {}})
    assert r["allowed"] is True
    assert stager.alive()


# ================================================================================================
# 5. malformed requests on the socket
# ================================================================================================
def _raw(sock_path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    return s


def _reply(s) -> dict:
    doc, _ = wire.recv(s, wire.MAX_REPLY)
    return doc


def test_malformed_requests_get_an_error_and_the_stager_serves_on(site):
    site.install()
    stager = site.start_stager()
    img = site.image("img.sif")
    silent = _raw(site.sock)                 # connects and says nothing, for the whole test
    trickled: dict = {}

    def trickle():                           # announces 200 bytes, sends one every 0.5 s (100 s in all)
        s = _raw(site.sock)
        try:
            s.sendall(struct.pack(">I", 200))
            for sent in range(60):
                s.settimeout(0.5)
                try:
                    trickled["reply"] = _reply(s)
                    trickled["sent"] = sent
                    return
                except (socket.timeout, TimeoutError):
                    s.sendall(b" ")
        finally:
            s.close()
    trickler = threading.Thread(target=trickle)
    trickler.start()
    fd = os.open(img, os.O_RDONLY)
    fd2 = os.open(img, os.O_RDONLY)
    req = json.dumps({"policy": site.policy, "path": img, "context": {}}).encode()
    cases = {   # name: (bytes sent, descriptors attached, what the error says)
        "no descriptor": (struct.pack(">I", len(req)) + req, [], "exactly one image descriptor"),
        "two descriptors": (struct.pack(">I", len(req)) + req, [fd, fd2], "exactly one image descriptor"),
        "oversized length": (struct.pack(">I", 1 << 30) + req, [fd], "over the 65536 byte limit"),
        "garbage JSON": (struct.pack(">I", 9) + b"{not json", [fd], "malformed message"),
        "JSON not an object": (struct.pack(">I", 7) + b"[1,2,3]", [fd], "not a JSON object"),
        "not UTF-8": (struct.pack(">I", 4) + b"\xff\xfe\xfd\xfc", [fd], "malformed message"),
        "truncated": (struct.pack(">I", 500) + req[:20], [fd], "closed in the middle"),
        "policy not a string": (struct.pack(">I", 26) + b'{"policy":[1],"path":"/x"}', [fd], "absolute path"),
        "relative policy": (struct.pack(">I", 32) + b'{"policy":"p.yaml","path":"/x" }', [fd], "absolute path"),
    }
    try:
        for name, (msg, fds, words) in cases.items():
            s = _raw(site.sock)
            try:
                if fds:
                    socket.send_fds(s, [msg], fds)
                else:
                    s.sendall(msg)
                if name == "truncated":
                    s.shutdown(socket.SHUT_WR)
                r = _reply(s)
            finally:
                s.close()
            assert r["ok"] is False and words in r["error"] and "Traceback" not in r["error"], (name, r)
            assert stager.alive(), name
        # while the silent client is still connected, a good request is answered
        r = ask_path(site.sock, img, {"policy": site.policy, "path": img, "context": {}})
        assert r["ok"] and r["allowed"], r
        # and the silent one is cut off with an error, not left holding the stager
        r = _reply(silent)
        assert r["ok"] is False and "bad request" in r["error"], r
        # so is one that trickles its request: the limit is on the whole request, not each read
        trickler.join(60)
        assert trickled.get("reply", {}).get("ok") is False and trickled["sent"] < 60, trickled
        assert "in time" in trickled["reply"]["error"] or "timed out" in trickled["reply"]["error"], trickled
    finally:
        silent.close()
        trickler.join(60)
        os.close(fd)
        os.close(fd2)
    assert stager.alive()
    assert len(site.objects()) == 1                          # the one good image, once
    p = site.shim("exec", img, "true")
    assert p.returncode == 0, p.stderr


def test_one_user_flooding_the_stager_does_not_lock_out_another(site):
    """root holds its 32 connections silent; a 33rd of root's is turned away at once; a
    request from nobody is answered meanwhile."""
    site.install()
    stager = site.start_stager()
    img = site.image("img.sif")
    flood = [_raw(site.sock) for _ in range(32)]
    try:
        time.sleep(0.2)                      # let the stager account for them
        extra = _raw(site.sock)
        try:
            r = _reply(extra)
        finally:
            extra.close()
        assert r["ok"] is False and "busy" in r["error"], r
        out = as_user(NOBODY, lambda: ask_path(site.sock, img, {"policy": site.policy, "path": img,
                                                                 "context": {}}))
        assert out.get("result", {}).get("allowed") is True, out
    finally:
        for s in flood:
            s.close()
    assert stager.alive()


# ================================================================================================
# 6. a stager killed while staging leaves nothing that could be served
# ================================================================================================
def _staging_file_open(pid: int, tmp_dir: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(tmp_dir + "/"):
                return True
        except OSError:
            pass
    return False


def test_stager_killed_mid_staging_leaves_no_servable_entry_and_restarts_clean(site, big_signed):
    site.install()
    stager = site.start_stager()
    tmp_dir = os.path.join(site.store, "tmp")
    answer: dict = {}

    def request():
        try:
            answer["reply"] = ask_path(site.sock, big_signed, {"policy": site.policy, "path": big_signed,
                                                               "context": {}})
        except Exception as e:  # noqa: BLE001
            answer["error"] = e
    t = threading.Thread(target=request)
    t.start()
    deadline = time.monotonic() + 60
    while not _staging_file_open(stager.proc.pid, tmp_dir) and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.001)
    assert _staging_file_open(stager.proc.pid, tmp_dir), ("never caught the stager staging", answer)
    stager.kill(signal.SIGKILL)
    t.join(60)
    assert isinstance(answer.get("error"), client.StagerUnavailable), answer
    # nothing the hooks (or a restarted stager) could take for a staged, verified image
    assert site.objects() == [] and site.ls("index") == [] and site.ls("decisions") == []
    assert site.ls("findings") == [] and [n for n in site.ls("objects") if n.endswith(".json")] == []
    assert all(n.startswith("staging.") for n in os.listdir(tmp_dir)), os.listdir(tmp_dir)   # never a name there
    assert not any(n.endswith(".sif") for n in os.listdir(tmp_dir))
    # the stale socket is replaced by a new stager, which stages the image properly
    again = site.start_stager()
    p = site.shim("exec", big_signed, "true", user=NOBODY)
    assert p.returncode == 0, p.stderr
    [(uid, ran, digest)] = site.runs()
    assert ran == site.object_path(site.objects()[0][:-4]) and digest == sha_file(big_signed)
    assert len(site.ls("index")) == 1 and len(site.ls("decisions")) == 1
    assert again.requests()[-1] == (65534, "staged")
    assert os.listdir(tmp_dir) == [] or all(n.startswith("staging.") for n in os.listdir(tmp_dir))


# ================================================================================================
# 7. collection: least recently used first, never an entry a task holds
# ================================================================================================
def _gc(site, budget: str) -> dict:
    r = run_cli("store", "gc", "--store", site.store, "--budget", budget, "--json")
    assert r.rc == 0, r
    return json.loads(r.out)


def _listing(site) -> dict:
    r = run_cli("store", "list", "--store", site.store, "--json")
    assert r.rc == 0, r
    doc = json.loads(r.out)
    return {e["digest"]: e for e in doc["entries"]}


def _hold(site, path) -> subprocess.Popen:
    """A process of nobody's that holds the entry: read-only descriptor + OFD read lock."""
    code = (f"import os, sys, time; sys.path.insert(0, {REPO!r}); from sifguard.store import locks; "
            f"fd = os.open({path!r}, os.O_RDONLY); assert locks.hold_shared(fd); print('held', flush=True); "
            "time.sleep(120)")
    p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", site.python, "-c", code],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read() if p.poll() is not None else ""
    return p


def _stage_and_run(site, name, mib) -> tuple[str, str]:
    img = site.image(name, mib)
    p = site.shim("exec", img, "true")
    assert p.returncode == 0, p.stderr
    ran = site.runs()[-1][1]
    return img, os.path.basename(ran)[:-len(".sif")]


@pytest.mark.parametrize("holder", ["process with a lock", "task running the image"])
def test_gc_removes_least_recently_used_but_never_an_entry_in_use(site, holder):
    site.install()
    site.start_stager()
    a_img, a = _stage_and_run(site, "a.sif", 2)
    b_img, b = _stage_and_run(site, "b.sif", 2)
    c_img, c = _stage_and_run(site, "c.sif", 2)
    assert len({a, b, c}) == 3 and len(site.objects()) == 3
    # a is held by a running task
    if holder == "process with a lock":
        hold = _hold(site, site.object_path(a))
    else:   # the shim execs the runtime with the entry's locked descriptor: the lock survives exec
        # (its own session: the runtime's children inherit the descriptor, and the lock, too)
        hold = subprocess.Popen(site.shim_cmd("exec", a_img, "true"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=site.root, start_new_session=True,
                                env=dict(os.environ, STANDIN_SLEEP="120"))
        deadline = time.monotonic() + 60
        while len(site.runs()) < 4 and time.monotonic() < deadline and hold.poll() is None:
            time.sleep(0.05)
        assert len(site.runs()) == 4 and site.runs()[-1][1] == site.object_path(a), hold.stderr
    try:
        # b was used last (its access time is newest), a before c: LRU order is a, c, b
        now = time.time()
        for d, used in ((a, now - 300), (c, now - 200), (b, now + 100)):
            os.utime(site.object_path(d), (used, os.stat(site.object_path(d)).st_mtime))
        listing = _listing(site)
        assert listing[a]["in_use"] is True and listing[b]["in_use"] is False and listing[c]["in_use"] is False
        two = listing[a]["size"] + listing[b]["size"]
        res = _gc(site, str(two))             # room for two: a is held (it counts), so c goes, b stays
        assert res["kept_in_use"] == [a] and res["removed"] == [c], res
        assert sorted(site.objects()) == sorted([a + ".sif", b + ".sif"])
        assert _listing(site)[a]["in_use"] is True
        res = _gc(site, str(listing[b]["size"]))   # room for one: a would go first, but is held; b goes
        assert res["kept_in_use"] == [a] and res["removed"] == [b], res
        assert site.objects() == [a + ".sif"]
    finally:
        os.killpg(hold.pid, signal.SIGKILL) if holder != "process with a lock" else hold.kill()
        hold.wait(30)
    deadline = time.monotonic() + 10       # the session's last process is gone a moment later
    while _listing(site)[a]["in_use"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _listing(site)[a]["in_use"] is False
    res = _gc(site, "1")                      # released: now it goes
    assert res["removed"] == [a] and res["kept_in_use"] == [] and res["total_after"] == 0, res
    assert site.objects() == []
    # the records that pointed at removed copies went with them
    assert site.ls("index") == [] and site.ls("decisions") == [] and site.ls("findings") == []
    # a task after its entry was collected: staged again, runs
    before = [h for _, h in site._stagers[0].requests()].count("staged")
    p = site.shim("exec", a_img, "true")
    assert p.returncode == 0, p.stderr
    assert site.runs()[-1][1] == site.object_path(a) and site.runs()[-1][2] == sha_file(a_img)
    assert [h for _, h in site._stagers[0].requests()].count("staged") == before + 1


def test_asking_whether_an_entry_is_in_use_never_keeps_a_task_from_holding_it(tmp_path):
    """`store list` asks every entry whether it is in use while tasks start: the question
    must take no lock, or a task starting at that instant fails to hold its entry (and is
    refused). Real OFD locks, a lister thread in a tight loop, 5000 task starts."""
    obj = tmp_path / "entry.sif"
    obj.write_bytes(b"x" * 4096)
    os.chmod(obj, 0o444)
    stop = threading.Event()
    seen = []

    def lister():
        while not stop.is_set():
            seen.append(locks.in_use(str(obj)))
    t = threading.Thread(target=lister)
    t.start()
    failed = 0
    try:
        for _ in range(5000):
            fd = os.open(obj, os.O_RDONLY)
            failed += not locks.hold_shared(fd)
            os.close(fd)
    finally:
        stop.set()
        t.join()
    assert failed == 0 and seen
    fd = os.open(obj, os.O_RDONLY)                   # and it still answers: held, then released
    try:
        assert locks.hold_shared(fd) and locks.in_use(str(obj))
    finally:
        os.close(fd)
    assert not locks.in_use(str(obj))


def test_gc_and_list_command_lines(site):
    site.install()
    site.start_stager()
    _stage_and_run(site, "a.sif", 1)
    r = run_cli("store", "list", "--store", site.store)
    assert r.rc == 0 and "1 images" in r.out and "IN USE" in r.out, r
    r = run_cli("store", "gc", "--store", site.store, "--budget", "1G")
    assert r.rc == 0 and "removed 0 images" in r.out, r
    r = run_cli("store", "gc", "--store", site.store, "--budget", "lots")
    assert r.rc == 2 and "not a size" in r.err and r.err.count("\n") == 1, r
    r = run_cli("store", "gc", "--store", site.store, "--budget", "1K")
    assert r.rc == 0 and "removed 1 images" in r.out, r
    assert site.objects() == []


# ================================================================================================
# 8. the original swapped or rewritten after it was staged
# ================================================================================================
@pytest.mark.parametrize("swap", ["unsigned image written over it", "one byte rewritten in place",
                                  "unsigned image renamed over it"])
def test_swapped_original_is_verified_again_not_served_from_the_index(site, swap):
    """Same path, same size, same mtime (restored with utime); for the in-place byte even the
    same inode and first 4 KiB: only the ctime (which users cannot set) differs — and that is
    enough for an index miss."""
    site.install()
    stager = site.start_stager()
    payload = os.urandom(60000)
    img = make_sif(site.root / "app.sif", payload)
    unsigned = site.root / "unsigned.sif"
    shutil.copyfile(img, unsigned)              # the same image before it is signed
    sign(img, site.chain)
    p = site.shim("exec", img, "true")
    assert p.returncode == 0, p.stderr
    good = site.runs()[0]
    before = os.stat(img)
    size = before.st_size
    os.truncate(unsigned, size)                 # padded to the signed image's size
    head = open(img, "rb").read(4096)
    if swap == "unsigned image written over it":
        with open(img, "r+b") as f:
            f.write(unsigned.read_bytes())
    elif swap == "one byte rewritten in place":
        off, n, _ = object_ranges(img)[1]       # the partition
        _flip(img, off + n // 2)
    else:
        new = site.root / "app.sif.new"
        shutil.copyfile(unsigned, new)
        os.chmod(new, 0o644)
        os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(new, img)
    os.utime(img, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(img)
    assert (after.st_size, after.st_mtime_ns) == (size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns
    if swap == "one byte rewritten in place":   # nothing the index key hashes changed but the ctime
        assert open(img, "rb").read(4096) == head and after.st_ino == before.st_ino
    p = site.shim("exec", img, "true")
    one_line_refusal(p)
    assert ("changed" if swap == "one byte rewritten in place" else "not signed") in p.stderr, p.stderr
    assert site.runs() == [good]                 # the runtime was not started again
    assert stager.requests()[-1][1] in ("staged", "deduplicated")    # re-read, re-verified
    assert len(site.objects()) == 1              # and not kept
    if swap == "one byte rewritten in place":   # the byte put back: the signed bytes again, run from the store
        _flip(img, off + n // 2)
        p = site.shim("exec", img, "true")
        assert p.returncode == 0 and site.runs()[-1] == good, p.stderr
        assert stager.requests()[-1][1] == "deduplicated"


# ================================================================================================
# 9. an unsafe store directory is refused, with the fix
# ================================================================================================
@pytest.mark.parametrize("unsafe", ["group-writable", "owned by nobody", "a symlink", "world-writable parent",
                                    "writable subdirectory", "missing", "sticky world-writable parent (safe)"])
def test_unsafe_store_is_refused_in_one_line_naming_problem_and_fix(site, unsafe):
    store = site.store
    if unsafe in ("world-writable parent", "sticky world-writable parent (safe)"):
        parent = site.root / "shared"
        parent.mkdir(mode=0o755)
        store = str(parent / "store")
    if unsafe != "missing":
        Store(store).init()
    if unsafe in ("world-writable parent", "sticky world-writable parent (safe)"):
        os.chmod(parent, 0o1777 if "sticky" in unsafe else 0o777)
    link = None
    if unsafe == "group-writable":
        os.chmod(store, 0o775)
    elif unsafe == "owned by nobody":
        os.chown(store, *NOBODY)
    elif unsafe == "a symlink":
        link = str(site.root / "store-link")
        os.symlink(store, link)
    elif unsafe == "writable subdirectory":
        os.chmod(os.path.join(store, "objects"), 0o777)
    site.install(store=link or store, sock=str(site.root / "run" / "absent.sock"))
    img = site.image("app.sif")
    p = site.shim("exec", img, "true")
    if unsafe.endswith("(safe)") or unsafe == "missing":
        # a sticky /tmp-like parent is fine; a store not created yet is like a stager that never
        # ran: the sealed-copy fallback, said in one line
        assert p.returncode == 0, p.stderr
        assert site.runs()[0][1].startswith("/proc/self/fd/")   # no stager: the sealed copy
        if unsafe == "missing":
            assert "does not exist" in p.stderr and "sealed in-memory copy" in p.stderr, p.stderr
        return
    one_line_refusal(p)
    assert site.runs() == []
    words = {"group-writable": ("writable by group or others", f"chmod go-w {store}"),
             "owned by nobody": ("owned by uid 65534", f"chown root:root {store}"),
             "a symlink": ("symlink", "fix:"),
             "world-writable parent": ("parent directory", f"chmod go-w {os.path.dirname(store)}"),
             "writable subdirectory": ("writable by group or others", "chmod go-w")}[unsafe]
    for w in words:
        assert w in p.stderr, (w, p.stderr)


# ================================================================================================
# 10. no stager: small images run from a sealed copy, big ones are refused with how to start it
# ================================================================================================
@pytest.mark.parametrize("down", ["no socket file", "stale socket file", "stager killed"])
def test_stager_down_small_image_runs_sealed_big_one_refused(site, down):
    Store(site.store).init()
    if down == "stale socket file":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(site.sock)
        s.close()                                   # the file stays, nobody listens
    elif down == "stager killed":
        site.start_stager().kill(signal.SIGKILL)
        assert os.path.exists(site.sock)
    site.install("", "--seal-limit", "64K")
    small = site.image("small.sif", 20000)
    p = site.shim("exec", small, "true")
    assert p.returncode == 0, p.stderr
    [(uid, ran, digest)] = site.runs()
    assert uid == 65534 and re.fullmatch(r"/proc/self/fd/\d+", ran) and digest == sha_file(small)
    unsigned = site.image("unsigned.sif", 20000, signed=False)
    p = site.shim("exec", unsigned, "true")
    one_line_refusal(p)
    assert "not signed" in p.stderr
    big = site.image("big.sif", 200000)
    p = site.shim("exec", big, "true")
    one_line_refusal(p)
    assert "sifguard store serve" in p.stderr and site.sock in p.stderr and "--store" in p.stderr, p.stderr
    assert len(site.runs()) == 1
    assert site.objects() == []


# ================================================================================================
# 11. records nobody but root wrote are not believed; a lying client records nothing honest hooks use
# ================================================================================================
def _stage_cli(site, img, *extra) -> dict:
    r = run_cli("store", "stage", img, "--store", site.store, "--json", *extra)
    assert "Traceback" not in r.err
    return {"rc": r.rc, **json.loads(r.out)} if r.out.strip() else {"rc": r.rc, "err": r.err}


def _keys_as_the_shim_sees_them(site, img) -> tuple[str, tuple[str, ...], str]:
    """(index key, candidate rule names, policy fingerprint) for nobody running `img`."""
    from sifguard.policy.decide import JobContext, candidate_rules
    from sifguard.policy.loader import load_fast
    pol = load_fast(site.policy)
    st = os.stat(img)
    with open(img, "rb") as f:
        head = f.read(keys.HEAD)
    names = tuple(r.name for r in candidate_rules(pol, img, JobContext(user="nobody", group="nogroup")))
    return keys.index_key(st, head), names, keys.policy_fingerprint(pol)


def _forge(path: str, doc: dict, how: str) -> None:
    records.write(path, doc)
    if how == "owned by nobody":
        os.chown(path, *NOBODY)
    elif how == "group-writable":
        os.chmod(path, 0o664)
    elif how == "world-writable":
        os.chmod(path, 0o666)


@pytest.mark.parametrize("how", ["owned by nobody", "group-writable", "world-writable", "root's own (control)"])
def test_forged_decision_record_is_ignored_unless_root_wrote_it(site, how):
    """An allowing decision for an unsigned image's stored copy, placed in decisions/: only a
    record root wrote (the control) is believed; any other goes cold, and the stager refuses."""
    site.install()
    stager = site.start_stager()
    img = site.image("unsigned.sif", signed=False)
    staged = _stage_cli(site, img)                        # stored unverified (no --policy): object + index
    assert staged["rc"] == 0 and staged["how"] == "staged", staged
    digest = staged["digest"]
    _, names, fp = _keys_as_the_shim_sees_them(site, img)
    path = Store(site.store).decision_path(keys.decision_key(digest, fp, names))
    _forge(path, {"digest": digest, "policy": fp, "candidates": list(names), "valid_until": time.time() + 600,
                  "verdict": {"allowed": True, "decision": "allow", "reason": "forged", "rule": names[0]}}, how)
    p = site.shim("exec", img, "true")
    if how == "root's own (control)":                     # the keys are right: root's record is used, warm
        assert p.returncode == 0 and site.runs()[0][1] == site.object_path(digest), p.stderr
        assert stager.requests() == []
        return
    one_line_refusal(p)
    assert "not signed" in p.stderr and site.runs() == []
    assert stager.requests() == [(65534, "indexed")]       # went cold: the stager decided it afresh


@pytest.mark.parametrize("how", ["owned by nobody", "group-writable", "root's own (control)"])
def test_forged_index_record_is_ignored_unless_root_wrote_it(site, how):
    """An index record pointing an unsigned file at a signed image's stored copy (with its
    recorded allowing decision): only root's record is believed."""
    site.install()
    stager = site.start_stager()
    signed = site.image("signed.sif")
    assert site.shim("exec", signed, "true").returncode == 0
    signed_digest = os.path.basename(site.runs()[0][1])[:-4]
    img = site.image("unsigned.sif", signed=False)
    key, _, _ = _keys_as_the_shim_sees_them(site, img)
    _forge(Store(site.store).index_path(key), {"identity": keys.file_identity(os.stat(img)), "digest": signed_digest,
                                               "stored": True, "indexed_at": time.time()}, how)
    p = site.shim("exec", img, "true")
    if how == "root's own (control)":
        assert p.returncode == 0 and site.runs()[-1][1] == site.object_path(signed_digest), p.stderr
        return
    one_line_refusal(p)
    assert "not signed" in p.stderr and len(site.runs()) == 1
    assert stager.requests()[-1] == (65534, "staged")


@pytest.mark.parametrize("lie", ["path under a permissive rule", "user of a permissive rule"])
def test_a_lying_client_records_nothing_an_honest_hook_uses(site, lie):
    """nobody sends the stager an unsigned image's descriptor claiming a path (or user)
    whose rule is `require: any`; the decision recorded is keyed by those candidate rules,
    so the honest shim, on the image's real path and as its real user, still refuses it."""
    free = site.root / "free"
    free.mkdir(mode=0o755)
    site.install(f"rules:\n  - name: free\n    match: {{path: '{free}/**'}}\n    require: any\n"
                 "  - name: root-anything\n    match: {user: root}\n    require: any\n")
    stager = site.start_stager()
    img = site.image("unsigned.sif", signed=False)
    request = {"policy": site.policy, "path": str(free / "innocent.sif"), "context": {}} \
        if lie.startswith("path") else {"policy": site.policy, "path": img, "context": {"user": "root"}}
    out = as_user(NOBODY, lambda: ask_path(site.sock, img, request))
    reply = out.get("result")
    assert reply is not None, out
    if lie.startswith("path"):       # the stager decides for that path's rule, but the file sent is not the one
        # at that path, so the unverified bytes are not kept and nothing is recorded (red team F8)
        assert reply["allowed"] is True and reply["candidates"] == ["free"] and reply["object"] is None, reply
        assert site.ls("decisions") == [] and site.objects() == []
    else:                            # the user is the peer's own (SO_PEERCRED), not what it says
        assert reply["allowed"] is False and reply["candidates"] == [DEFAULT_RULE], reply
        assert site.ls("decisions") == []
    p = site.shim("exec", img, "true")
    one_line_refusal(p)
    assert "not signed" in p.stderr and site.runs() == []
    assert [h for _, h in stager.requests()] == ["staged", "indexed"]


# ================================================================================================
# 12. an expired decision is decided again
# ================================================================================================
@pytest.mark.parametrize("expiry", [-10.0, "never", None])
def test_expired_decision_goes_cold_and_is_decided_again(site, expiry):
    site.install()
    stager = site.start_stager()
    img = site.image("app.sif")
    assert site.shim("exec", img, "true").returncode == 0
    [d] = site.ls("decisions")
    path = os.path.join(site.store, "decisions", d)
    rec = records.read(path)
    assert rec["valid_until"] > time.time()
    assert site.shim("exec", img, "true").returncode == 0
    assert len(stager.requests()) == 1                     # warm: the stager was not asked
    if expiry is None:
        del rec["valid_until"]
    else:
        rec["valid_until"] = time.time() + expiry if isinstance(expiry, float) else expiry
    records.write(path, rec)                               # as root: a record to be believed, but expired
    p = site.shim("exec", img, "true")
    assert p.returncode == 0, p.stderr
    assert stager.requests()[-1] == (65534, "indexed")     # cold: asked the stager, no copy
    assert len(site.objects()) == 1 and len({r[1] for r in site.runs()}) == 1
    assert records.read(path)["valid_until"] > time.time()     # recorded afresh
    assert site.shim("exec", img, "true").returncode == 0
    assert len(stager.requests()) == 2                     # and warm again


@pytest.mark.parametrize("change", ["trust root replaced", "policy rule added"])
def test_a_changed_policy_or_trust_root_never_reuses_a_recorded_decision(site, change):
    """The policy file unchanged but the root certificate it names replaced (CA rotation),
    or a rule added: the recorded decision is keyed by the old fingerprint, so the next task
    asks the stager, which decides under what the policy says now."""
    roots = site.root / "roots.pem"
    shutil.copyfile(site.chain.root_pem, roots)
    os.chmod(roots, 0o644)
    site.install(roots=str(roots))
    stager = site.start_stager()
    img = site.image("app.sif")
    assert site.shim("exec", img, "true").returncode == 0
    assert site.shim("exec", img, "true").returncode == 0
    assert len(stager.requests()) == 1                     # warm
    if change == "trust root replaced":
        (site.root / "other-ca").mkdir(mode=0o755)
        shutil.copyfile(SiteChain(site.root / "other-ca").root_pem, roots)
    else:
        site.install("rules:\n  - name: only-alice\n    signers: [{email: 'alice@*'}]\n", roots=str(roots))
    p = site.shim("exec", img, "true")
    one_line_refusal(p)
    assert len(stager.requests()) == 2 and stager.requests()[-1] == (65534, "indexed")
    assert len(site.runs()) == 2


def test_expired_allowing_decision_for_an_unsigned_image_is_decided_again_and_refused(site):
    site.install()
    stager = site.start_stager()
    img = site.image("unsigned.sif", signed=False)
    digest = _stage_cli(site, img)["digest"]
    _, names, fp = _keys_as_the_shim_sees_them(site, img)
    records.write(Store(site.store).decision_path(keys.decision_key(digest, fp, names)), {
        "digest": digest, "policy": fp, "candidates": list(names), "valid_until": time.time() - 1,
        "verdict": {"allowed": True, "decision": "allow", "reason": "stale", "rule": names[0]}})
    p = site.shim("exec", img, "true")
    one_line_refusal(p)
    assert "not signed" in p.stderr and site.runs() == [] and stager.requests() == [(65534, "indexed")]


# ================================================================================================
# 13. `sifguard store stage` / `store list`: pre-staging a catalogue
# ================================================================================================
def test_store_stage_and_list_then_a_user_runs_warm(site):
    site.install()
    stager = site.start_stager()
    img = site.image("catalogue.sif", 3)
    size = os.path.getsize(img)
    r = _stage_cli(site, img, "--policy", site.policy)
    assert r["rc"] == 0, r
    assert re.fullmatch(r"[0-9a-f]{64}", r["digest"]) and r["object"] == site.object_path(r["digest"])
    assert (r["how"], r["copies"], r["bytes_hashed"]) == ("staged", 1, size)
    assert r["allowed"] is True and r["verdict"]["decision"] == "allow" and r["valid_until"] > time.time()
    assert r["candidates"] == [DEFAULT_RULE] and re.fullmatch(r"[0-9a-f]{64}", r["policy"])
    assert sha_file(r["object"]) == sha_file(img)
    again = _stage_cli(site, img, "--policy", site.policy)
    assert (again["rc"], again["how"], again["copies"], again["bytes_hashed"]) == (0, "indexed", 0, 0)
    assert again["digest"] == r["digest"]
    # a user's task runs the pre-staged copy warm: the stager is not asked
    p = site.shim("exec", img, "true")
    assert p.returncode == 0, p.stderr
    assert site.runs() == [(65534, r["object"], sha_file(img))]
    assert stager.requests() == []
    # listing
    lr = run_cli("store", "list", "--store", site.store, "--json")
    assert lr.rc == 0, lr
    doc = json.loads(lr.out)
    assert doc["store"] == site.store and doc["total"] == size
    [e] = doc["entries"]
    assert set(e) == {"digest", "size", "staged_at", "last_used", "in_use", "sources"}
    assert (e["digest"], e["size"], e["in_use"], e["sources"]) == (r["digest"], size, False, 1)
    assert e["last_used"] >= e["staged_at"] > time.time() - 300
    lr = run_cli("store", "list", "--store", site.store)
    assert lr.rc == 0 and r["digest"][:16] in lr.out and "1 images" in lr.out, lr


def test_store_stage_exit_codes_and_text(site):
    site.install()
    unsigned = site.image("unsigned.sif", signed=False)
    signed = site.image("signed.sif")
    # no policy: stored as it is (a catalogue the admin vouches for)
    r = run_cli("store", "stage", signed, "--store", site.store)
    assert r.rc == 0 and ": staged: " + site.store in r.out, r
    r = run_cli("store", "stage", signed, "--store", site.store)
    assert r.rc == 0 and "already staged" in r.out, r
    # with a policy it does not pass: findings recorded, no copy kept, exit 1
    r = _stage_cli(site, unsigned, "--policy", site.policy)
    assert r["rc"] == 1 and r["object"] is None and r["allowed"] is False and r["copies"] == 0, r
    assert "not signed" in r["verdict"]["reason"]
    r = run_cli("store", "stage", unsigned, "--store", site.store, "--policy", site.policy)
    assert r.rc == 1 and "not kept" in r.out and "refuse" in r.out, r
    assert len(site.objects()) == 1
    # bad input: one line, exit 2, nothing staged
    loose = site.root / "loose-policy.yaml"
    shutil.copyfile(site.policy, loose)
    os.chmod(loose, 0o666)
    for args, words in (([str(site.root / "missing.sif")], "No such file"),
                        ([str(site.root)], "directory"),
                        (["/dev/null"], "not a regular file"),
                        ([signed, "--policy", str(site.root / "missing.yaml")], "No such file"),
                        ([signed, "--policy", str(loose)], "only root can write")):
        r = run_cli("store", "stage", *args, "--store", site.store)
        assert r.rc == 2 and words in r.err and r.err.count("\n") == 1, (args, r)
    junk = site.root / "junk.sif"
    junk.write_bytes(b"not a sif\n" * 50)
    r = run_cli("store", "stage", junk, "--store", site.store)
    assert r.rc == 2 and r.err.count("\n") == 1, r
    assert len(site.objects()) == 1 and os.listdir(os.path.join(site.store, "tmp")) == []
    # not root: refused before anything is touched (users cannot list the store: entries are found by key)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", site.python, "-m", "sifguard",
                        "store", "stage", signed, "--store", site.store], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert p.returncode == 2 and "must run as root" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", site.python, "-m", "sifguard",
                        "store", "list", "--store", site.store, "--json"], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert p.returncode == 2 and "must run as root" in p.stderr and p.stderr.count("\n") == 1, p.stderr


# ================================================================================================
# the stager's own command line
# ================================================================================================
def test_store_serve_refuses_what_it_cannot_serve_in_one_line(site):
    Store(site.store).init()
    long_sock = str(site.root / ("s" * 120 + ".sock"))
    for args, rc, words in ((["--socket", long_sock], 2, f"cannot listen on {long_sock}"),
                            (["--socket", str(site.root / "no" / "dir" / "s.sock")], 2, "cannot listen on"),
                            (["--socket", site.sock, "--max-connections", "0"], 2, "at least 1")):
        r = run_cli("store", "serve", "--store", site.store, *args, timeout=60)
        assert r.rc == rc and words in r.err and r.err.count("\n") == 1, (args, r)
    os.chmod(site.store, 0o775)
    r = run_cli("store", "serve", "--store", site.store, "--socket", site.sock, timeout=60)
    assert r.rc == 1 and "chmod go-w" in r.err and r.err.count("\n") == 1, r
    assert not os.path.exists(site.sock)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", site.python, "-m", "sifguard",
                        "store", "serve", "--store", site.store, "--socket", site.sock], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert p.returncode == 2 and "must run as root" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_image_over_the_stagers_size_limit_is_refused_in_one_line(site):
    site.install()
    stager = site.start_stager("--max-image", "64K")
    small = site.image("small.sif", 20000)
    big = site.image("big.sif", 200000)
    assert site.shim("exec", small, "true").returncode == 0
    p = site.shim("exec", big, "true")
    one_line_refusal(p)
    assert "limit per image" in p.stderr and len(site.runs()) == 1
    assert len(site.objects()) == 1 and stager.alive()


# ================================================================================================
# open finding (strict xfail: remove the marker with the fix)
# ================================================================================================
def _store_paths_in_process_table(store: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        found += [a.decode() for a in argv if a.startswith(store.encode() + b"/objects/")]
    return found


def test_another_user_cannot_read_the_stored_copy_of_a_private_image(site):
    """uid 1000 runs an image from a 0700 directory of theirs; while it runs, nobody looks at
    the process table and tries to read the verified copy the runtime was given."""
    site.install()
    site.start_stager()
    private = site.root / "home-1000"
    private.mkdir(mode=0o700)
    img = make_sif(private / "private.sif", os.urandom(50000))
    sign(img, site.chain)
    os.chown(private, *USER1000)
    os.chown(img, *USER1000)
    assert as_user(NOBODY, lambda: os.access(img, os.R_OK))["result"] is False
    task = subprocess.Popen(site.shim_cmd("exec", img, "true", user=USER1000), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=site.root, start_new_session=True,
                            env=dict(os.environ, STANDIN_SLEEP="60"))
    try:
        deadline = time.monotonic() + 60
        while not site.runs() and time.monotonic() < deadline and task.poll() is None:
            time.sleep(0.05)
        assert site.runs(), task.stderr.read() if task.poll() is not None else "task did not start"

        def snoop():
            got = []
            for path in _store_paths_in_process_table(site.store):
                try:
                    got.append(sha_file(path))
                except OSError:
                    pass
            return got
        stolen = as_user(NOBODY, snoop)["result"]
    finally:
        os.killpg(task.pid, signal.SIGKILL)
        task.wait(30)
    assert sha_file(img) not in stolen, "nobody read uid 1000's private image through the store"


@pytest.mark.parametrize("where", ["0700 directory", "0600 file", "0640 file", "0604 file"])
def test_private_source_gets_a_copy_only_its_readers_can_read(site, where):
    """A source not every user can read is stored root-only (0400) with a read entry (ACL)
    for each user who proved, by sending its descriptor, that they can read it: the owner's
    runtime opens the copy by its path (warm the second time, no re-hash), another user who
    sees that path cannot read it. The same bytes from a public place make the content
    public: still one copy, now 0444."""
    from sifguard.store import acl
    site.install()
    stager = site.start_stager()
    home = site.root / "home-1000"
    home.mkdir(mode=0o700 if where == "0700 directory" else 0o755)
    img = make_sif(home / "app.sif", os.urandom(30000))
    sign(img, site.chain)
    os.chown(home, *USER1000)
    os.chown(img, *USER1000)
    os.chmod(img, {"0600 file": 0o600, "0640 file": 0o640, "0604 file": 0o604}.get(where, 0o644))
    for _ in range(2):
        p = site.shim("exec", img, "true", user=USER1000)
        assert p.returncode == 0, p.stderr
    (obj,) = site.objects()
    path = site.object_path(obj[:-4])
    runs = site.runs()
    assert [r[1] for r in runs] == [path, path] and runs[0][2] == runs[1][2] == sha_file(img), runs
    assert os.stat(path).st_mode & 0o007 == 0 and acl.readers(path) == {1000}
    assert [h for _, h in stager.requests()].count("staged") == 1 and len(stager.requests()) == 1   # 2nd: warm
    stolen = as_user(NOBODY, lambda: open(path, "rb").read(1))
    assert stolen.get("exception") == "PermissionError", stolen
    p = site.shim("exec", img, "true")
    if where == "0604 file":      # others may read it (not the file's group): nobody proves it and is let in
        assert p.returncode == 0 and acl.readers(path) == {1000, 65534}, p.stderr
    else:                         # nobody cannot read the source either: refused, still locked out
        assert p.returncode == 1 and len(site.runs()) == 2 and acl.readers(path) == {1000}
    public = site.root / "public.sif"
    shutil.copyfile(img, public)
    os.chmod(public, 0o644)
    p = site.shim("exec", public, "true")
    assert p.returncode == 0, p.stderr
    assert site.runs()[-1][1] == path and site.objects() == [obj] and os.stat(path).st_mode & 0o777 == 0o444


def test_a_user_cannot_stage_without_a_policy(site):
    """Only root stages copies without deciding them (a user could fill the disk)."""
    site.install()
    stager = site.start_stager()
    img = site.image("nopolicy.sif", signed=False)
    got = as_user(NOBODY, lambda: ask_path(site.sock, img, {"path": img}))
    assert got.get("exception") == "StagerRefused" and "policy" in got["message"], got
    assert site.objects() == [] and stager.alive()
