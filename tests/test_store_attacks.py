"""Red team: the verified image store (issue 9) against an unprivileged job user.

Real parts only: a real stager (`sifguard store serve`, root) on a real Unix socket, the
real shim installed by `sifguard slurm install --store … --stager-socket …`, a stand-in
runtime (Apptainer is not installable here) that records its argv and the SHA-256 of the
image it was given, and attackers that are processes running as nobody (uid 65534) or
uid 1000 (forked children that drop every privilege with setresuid/setgroups).

Every test asserts the *safe* behaviour; each names the attack class it tries.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
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
from pathlib import Path

import pytest

from conftest import APPT, run_cli
from pki import SiteChain

NOBODY = 65534
OTHER = 1000

# Everything the shim and the attackers import lazily is imported here, before any child
# drops its privileges (/root, where the interpreter's site-packages live, is 0700).
import encodings.ascii, encodings.idna, encodings.latin_1, encodings.utf_8  # noqa: E401,E402,F401
import yaml  # noqa: E402,F401
from sifguard.enforce import decide as _decide  # noqa: E402,F401
from sifguard.policy import loader as _loader  # noqa: E402
from sifguard.slurm import config as _hookconf, context as _context, gate as _gate, shim as _shim  # noqa: E402,F401
from sifguard.store import client, gc, keys, locks, lookup, records, wire  # noqa: E402
from sifguard.store.layout import Store  # noqa: E402


# --- running as another user -----------------------------------------------------------

def as_user(fn, *args, uid=NOBODY, timeout=60.0, stderr_path=None):
    """Run fn(*args) in a forked child as `uid` (no groups, no capabilities); its return
    value (JSON-able) back, or ("raised", repr) / ("exit", code) / ("exec", status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        try:
            os.close(r)
            if stderr_path:
                fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                os.dup2(fd, 2)
                sys.stderr = open(2, "w", closefd=False)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            try:
                out = ["ok", fn(*args)]
            except BaseException as e:  # noqa: BLE001
                out = ["raised", f"{type(e).__name__}: {e}"]
            os.write(w, json.dumps(out, default=str).encode())
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            raise AssertionError(f"as_user({fn.__name__}) did not finish in {timeout} s")
        time.sleep(0.01)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if not data:
        return ["exit", os.waitstatus_to_exitcode(status)]
    out = json.loads(data)
    return out[1] if out[0] == "ok" else tuple(out)


def _run_shim(exe: str, args: list[str], cwd: str):
    os.chdir(cwd)
    os.environ["PATH"] = "/usr/bin:/bin"
    cfg = os.path.join(os.path.dirname(os.path.dirname(exe)), "sifguard-slurm.json")
    return _shim.main([exe] + args, cfg)       # execs the stand-in on success: never returns then


def shim_as(env, args, uid=NOBODY, cwd=None):
    """The installed shim as `uid`: (exit code, stderr, the stand-in's record or None)."""
    before = env.records_count()
    err = env.base / f"shim-stderr-{time.monotonic_ns()}"
    out = as_user(_run_shim, str(env.exe), [str(a) for a in args], cwd or str(env.home), uid=uid,
                  stderr_path=str(err))
    rc = out if isinstance(out, int) else (out[1] if isinstance(out, list) and out[0] == "exit" else out)
    text = err.read_text() if err.exists() else ""
    recs = env.runtime_records()
    return rc, text, (recs[-1] if len(recs) > before else None)


# --- the node: a store, a stager, the installed hooks, a user's images -----------------

STANDIN = """#!/bin/sh
# stand-in for Apptainer: records argv, the image's SHA-256 and the descriptors it inherited
img="$2"
{{ printf '%s\\n' "ARGV $*"; printf 'SHA %s\\n' "$(sha256sum "$img" 2>/dev/null | cut -d' ' -f1)";
   for fd in /proc/$$/fd/*; do printf 'FD %s %s\\n' "${{fd##*/}}" "$(readlink "$fd")"; done; echo END; }} >> {log}
exit 0
"""


class Env:
    def __init__(self, base: Path):
        self.base = base
        self.etc = base / "etc"
        self.etc.mkdir(mode=0o755)
        self.site = SiteChain(self.etc)
        for f in self.etc.iterdir():
            os.chmod(f, 0o644)
        self.home = base / "home"
        self.home.mkdir(mode=0o755)
        os.chown(self.home, NOBODY, NOBODY)
        self.any_dir = base / "any"             # a `require: any` rule's directory (user-writable)
        self.any_dir.mkdir(mode=0o777)
        os.chmod(self.any_dir, 0o1777)
        self.signed = self.user_image("signed.sif", sign=True)
        self.unsigned = self.user_image("unsigned.sif")
        self.policy = self.etc / "policy.yaml"
        self.write_policy()
        self.store = base / "store"
        self.run = base / "run"
        self.run.mkdir(mode=0o755)
        self.sock = self.run / "stager.sock"
        self.log = base / "runtime.log"
        self.log.write_text("")
        os.chmod(self.log, 0o666)
        self.standin = base / "apptainer-real"
        self.standin.write_text(STANDIN.format(log=self.log))
        os.chmod(self.standin, 0o755)
        self.stagers: list[subprocess.Popen] = []
        self.exe = base / "hooks" / "shim" / "apptainer"

    # images
    def user_image(self, name, sign=False, src="one-group.sif", owner=NOBODY, where=None) -> Path:
        p = (where or self.home) / name
        shutil.copyfile(os.path.join(APPT, "images", src), p)
        if sign:
            r = run_cli("sign", p, "--key", self.site.key_pem, "--cert", self.site.bundle_pem)
            assert r.rc == 0, r
        os.chown(p, owner, owner)
        os.chmod(p, 0o644)
        return p

    def write_policy(self, extra_rules: str = "", path: Path | None = None, roots: str | None = None):
        (path or self.policy).write_text(
            f"version: 1\ntrust: {{roots: [{roots or self.site.root_pem}]}}\nrevocation: {{mode: off}}\n"
            f"cache: {{images: off}}\nrules:\n{extra_rules}"
            f"  - name: anything\n    match: {{path: \"{self.any_dir}/**\"}}\n    require: any\n"
            f"  - name: default\n    require: signed\n")
        os.chmod(path or self.policy, 0o644)

    # the stager and the hooks
    def start_stager(self, *extra, umask=None) -> subprocess.Popen:
        errlog = open(self.base / f"stager-{len(self.stagers)}.log", "w")
        pre = (lambda: os.umask(umask)) if umask is not None else None
        p = subprocess.Popen([sys.executable, "-m", "sifguard", "store", "serve", "--store", str(self.store),
                              "--socket", str(self.sock), "--no-fsync", *extra],
                             stdout=subprocess.DEVNULL, stderr=errlog, preexec_fn=pre)
        self.stagers.append(p)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"stager exited: {(self.base / f'stager-{len(self.stagers) - 1}.log').read_text()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                return p
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("stager did not come up")

    def install(self, policy: Path | None = None, socket_path: Path | None = None):
        r = run_cli("slurm", "install", "--prefix", self.base / "hooks", "--policy", policy or self.policy,
                    "--apptainer", self.standin, "--singularity", self.standin, "--no-spank",
                    "--slurm-conf", self.base / "slurm.conf", "--store", self.store,
                    "--stager-socket", socket_path or self.sock)
        assert r.rc == 0, r

    def stop(self):
        for p in self.stagers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # what happened
    def runtime_records(self) -> list[dict]:
        out, cur = [], None
        for line in self.log.read_text().splitlines():
            if line.startswith("ARGV "):
                cur = {"argv": line[5:].split(), "sha": "", "fds": {}}
            elif line.startswith("SHA ") and cur is not None:
                cur["sha"] = line[4:]
            elif line.startswith("FD ") and cur is not None:
                _, n, target = (line.split(" ", 2) + [""])[:3]
                cur["fds"][n] = target
            elif line == "END" and cur is not None:
                out.append(cur)
                cur = None
        return out

    def records_count(self) -> int:
        return len(self.runtime_records())

    def objects(self) -> list[str]:
        d = self.store / "objects"
        return sorted(n for n in os.listdir(d) if n.endswith(".sif")) if d.exists() else []

    def stager_log(self) -> str:
        return "".join((self.base / f"stager-{i}.log").read_text() for i in range(len(self.stagers)))


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def env():
    base = Path(tempfile.mkdtemp(prefix="sg-attack-", dir="/tmp"))
    os.chmod(base, 0o755)
    e = Env(base)
    try:
        yield e
    finally:
        e.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node(env):
    """A running stager and the hooks installed against it."""
    env.start_stager()
    env.install()
    return env


# --- a raw client (what an attacker writes instead of using the shim) ------------------

def _ask_raw(sock_path: str, image: str | None, request: dict, flags=os.O_RDONLY, timeout=60.0):
    fd = os.open(image, flags | os.O_CLOEXEC) if image else None
    try:
        return client.ask(sock_path, fd, request, timeout=timeout)
    except client.StagerRefused as e:
        return {"ok": False, "error": str(e)}
    finally:
        if fd is not None:
            os.close(fd)


def ask_as(env, image, request, uid=NOBODY, flags=os.O_RDONLY):
    return as_user(_ask_raw, str(env.sock), str(image) if image else None, request, flags, uid=uid)


# === baseline: what the attacks are measured against ====================================

def test_baseline_signed_runs_the_verified_store_copy_unsigned_never_runs(node):
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rc is None or rc == ["exit", 0] or rc == 0, err       # exec'd the stand-in
    assert rec and rec["argv"][1].startswith(str(node.store / "objects") + "/"), rec
    assert rec["sha"] == sha256(node.signed)
    rc, err, rec2 = shim_as(node, ["run", node.unsigned])
    assert rec2 is None and "refused" in err


# --- background attackers: small stdlib scripts run as nobody by the system python ------

def spawn_as(script: str, *args, uid=NOBODY) -> subprocess.Popen:
    return subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                             "/usr/bin/python3", "-I", "-c", script, *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")


def reap(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(10)


FLIPPER = """
import os, sys
link, a, b = sys.argv[1:4]
tmp = link + ".flip"
i = 0
while True:
    i += 1
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(a if i % 2 else b, tmp)
    os.replace(tmp, link)
"""


# === confused deputy: the `policy` field ================================================

def test_policy_path_symlink_race_never_loads_a_user_policy_or_writes_through_user_links(node):
    """The stager checks that the policy's directories are root-owned, then loads it by
    path again: a directory component that is a user's symlink, flipped between a root
    directory and the user's own, must never get the user's YAML loaded by root (nor
    root's compiled snapshot written through a symlink the user planted)."""
    udir = node.home / "pol"
    udir.mkdir()
    node.write_policy(path=udir / "policy.yaml", extra_rules="  - name: pwned\n    require: any\n")
    victim = node.etc / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    pid = node.stagers[0].pid
    for name in ("policy.yaml.sifguard-compiled.json", f"policy.yaml.sifguard-compiled.json.{pid}.tmp"):
        os.symlink(victim, udir / name)
    for p in [udir, *udir.iterdir()]:
        os.lchown(p, NOBODY, NOBODY)
    link = node.any_dir / "cfg"
    flipper = spawn_as(FLIPPER, link, node.etc, udir)
    try:
        def attack(sock, image, path, n):
            seen = []
            for _ in range(n):
                r = _ask_raw(sock, image, {"policy": path, "path": image, "context": {}})
                seen.append(r.get("candidates") or r.get("error", "")[:80])
            return seen
        seen = as_user(attack, str(node.sock), str(node.unsigned), f"{link}/policy.yaml", 1000, timeout=300)
    finally:
        reap(flipper)
    assert isinstance(seen, list), seen
    assert ["pwned"] not in seen, "the stager decided under the user's own policy"
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert node.objects() == []                # nothing unsigned kept


SECRETS = {
    "shadow": "root:$6$S3CRETHASHxyz$abcdefghij:19000:0:99999:7:::\nalice:$6$ALICEHASHqq$zz:19000::::::\n",
    "key.pem": "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgS3CR3TK3Y\n"
               "-----END PRIVATE KEY-----\n",
    "app.yaml": "password: hunter2-S3CRET\ndb_user: S3CRETUSER\n",
    "token": "S3CRET-TOKEN-0123456789\n",
}


def test_policy_errors_never_show_a_caller_the_bytes_of_root_only_files(node):
    """Confused deputy by error message: naming root-only files as the `policy` made the
    root stager parse them and return the YAML loader's error, which quotes the offending
    line (an /etc/shadow line came back whole). A non-root caller now gets one generic
    line, the same whether the file exists or not; the details go to the stager's log."""
    secret = node.base / "secret"
    secret.mkdir(mode=0o700)
    for name, text in SECRETS.items():
        (secret / name).write_text(text)
        os.chmod(secret / name, 0o600)
    paths = [str(secret / n) for n in SECRETS] + [str(secret / "missing"), "/etc/shadow",
                                                  f"/proc/{node.stagers[0].pid}/environ", "/proc/self/environ",
                                                  f"{secret}/../secret/shadow"]
    replies = [ask_as(node, node.signed, {"policy": p, "path": str(node.signed), "context": {}}) for p in paths]
    needles = ["S3CRET", "hunter2", "ALICE", "root:", "MIGHA", "password", "PRIVATE", "No such file"]
    for p, r in zip(paths, replies):
        assert isinstance(r, dict) and r["ok"] is False, (p, r)
        assert "\n" not in r["error"] and not any(n in r["error"] for n in needles), (p, r)
    shown = {r["error"].replace(p[:256], "P") for p, r in zip(paths, replies)}
    assert len(shown) == 1, shown                  # no oracle: exists / unreadable / not YAML look the same
    assert node.stagers[0].poll() is None
    # root (the controller prolog, `store stage`) still gets the reason
    # the stager either never loads such a file for a user (not readable by everyone) or keeps
    # what the loader said to its own log
    log = node.stager_log()
    assert "S3CRET" in log or "unknown key" in log or "not a file every user can read" in log


def test_hostile_policy_files_are_refused_without_blocking_or_loading_them(node):
    """DoS through the `policy` field: a FIFO nobody writes, /dev/zero, a root-owned file
    bigger than any policy, a root-owned file in a user-owned directory, a user's symlink
    to the real policy, relative and non-string paths: each refused in one line, fast,
    and the stager keeps serving."""
    fifo = node.base / "fifo"
    os.mkfifo(fifo, 0o644)
    big = node.etc / "big.yaml"
    with open(big, "w") as f:
        f.write("version: 1\n# " + "x" * (4 << 20) + "\n")
    os.chmod(big, 0o644)
    udir = node.home / "d"
    udir.mkdir()
    os.chown(udir, NOBODY, NOBODY)
    in_user_dir = udir / "policy.yaml"
    shutil.copyfile(node.policy, in_user_dir)
    userlink = node.home / "link.yaml"
    os.symlink(node.policy, userlink)
    os.lchown(userlink, NOBODY, NOBODY)
    for bad in (str(fifo), "/dev/zero", "/dev/stdin", str(big), str(in_user_dir), "etc/policy.yaml",
                ["/etc/x"], {"a": 1}, 7, "/" * 5000, "/proc/kcore", "/proc/self/fd/0", "/proc/self/mem"):
        r = ask_as(node, node.signed, {"policy": bad, "path": str(node.signed), "context": {}})
        assert isinstance(r, dict) and r["ok"] is False and "\n" not in r["error"], (bad, r)
        assert len(r["error"]) < 600
    assert node.stagers[0].poll() is None
    r = ask_as(node, node.signed, {"policy": str(node.policy), "path": str(node.signed), "context": {}})
    assert r["ok"] and r["allowed"], r
    # a user's symlink to the real policy is that policy (resolved once, then only root's path is used)
    r2 = ask_as(node, node.signed, {"policy": str(userlink), "path": str(node.signed), "context": {}})
    assert r2["ok"] and r2["policy"] == r["policy"], r2


# === records: the store's own directories ================================================

def test_store_created_under_a_user_writable_directory_never_chmods_what_a_user_planted(env):
    """An admin puts the store under a directory users can write (here a sticky /tmp-like
    directory). A user got there first: the store directory is theirs and its `objects`,
    `tmp`, `index` are symlinks to root files. `store serve` must refuse — and must not have
    chmod'ed (0711, 0700) the files the symlinks point at on its way."""
    victims = {}
    for name in ("objects", "tmp", "index", "locks"):
        v = env.etc / f"victim-{name}"
        v.write_text("root's\n")
        os.chmod(v, 0o640)
        victims[name] = v

    def plant(store, targets):
        os.mkdir(store, 0o755)
        for name, t in targets.items():
            os.symlink(t, os.path.join(store, name))
        return sorted(os.listdir(store))
    store = env.any_dir / "store"
    assert as_user(plant, str(store), {k: str(v) for k, v in victims.items()}) == sorted(victims)
    env.store = store
    with pytest.raises(RuntimeError, match="owned by uid 65534|not root"):
        env.start_stager()
    for v in victims.values():
        assert stat.S_IMODE(v.stat().st_mode) == 0o640 and v.read_text() == "root's\n"
    # the same with a root-owned store directory whose subdirectories a user planted earlier
    store2 = env.base / "store2"
    store2.mkdir(mode=0o755)
    os.symlink(victims["objects"], store2 / "objects")
    env.store = store2
    with pytest.raises(RuntimeError, match="not a directory"):
        env.start_stager()
    assert stat.S_IMODE(victims["objects"].stat().st_mode) == 0o640


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_store_modes_do_not_depend_on_the_stagers_umask(env, umask):
    """Whatever umask the stager starts with, users can write nothing in the store, and
    read only what they must (objects and records by name, no listing)."""
    env.start_stager(umask=umask)
    env.install()
    rc, err, rec = shim_as(env, ["run", env.signed])
    assert rec and rec["sha"] == sha256(env.signed), err
    modes = {p.relative_to(env.store).as_posix(): (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode))
             for p in [env.store, *env.store.rglob("*")]}
    assert modes["."][0] == 0 and modes["."][1] & 0o022 == 0
    for name, want in (("objects", 0o711), ("index", 0o711), ("decisions", 0o711), ("findings", 0o711),
                       ("tmp", 0o700), ("locks", 0o700)):
        assert modes[name] == (0, want), (name, modes[name])
    for rel, (uid, mode) in modes.items():
        assert uid == 0 and mode & 0o022 == 0, (rel, oct(mode))
        if "/" in rel:
            assert mode == 0o444, (rel, oct(mode))     # records and objects: read-only, even for root

    def try_write(store):
        out = {}
        for sub in ("objects", "index", "decisions", "findings", "tmp", "locks", "."):
            d = os.path.join(store, sub)
            try:
                fd = os.open(os.path.join(d, "x.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.close(fd)
                out[sub] = "created"
            except OSError as e:
                out[sub] = errno.errorcode[e.errno]
            try:
                os.listdir(d)
                out[sub + " list"] = "listed" if sub != "." else "ok"
            except OSError as e:
                out[sub + " list"] = errno.errorcode[e.errno]
        return out
    got = as_user(try_write, str(env.store))
    assert all(v in ("EACCES", "ok") for v in got.values()), got


# === DoS: filling the store, monopolising the stager ====================================

ASKER = """
import json, os, socket, struct, sys
sock_path, image, policy, path, order, tag = sys.argv[1:7]
fd = os.open(image, os.O_RDONLY)
s = socket.socket(socket.AF_UNIX)
s.settimeout(300)
s.connect(sock_path)
data = json.dumps({"policy": policy, "path": path, "context": {}}).encode()
socket.send_fds(s, [struct.pack(">I", len(data)) + data], [fd])
buf = b""
while True:
    more = s.recv(65536)
    if not more:
        break
    buf += more
    if len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
        break
reply = json.loads(buf[4:]) if len(buf) > 4 else {}
with open(order, "a") as f:
    f.write(tag + " " + ("ok" if reply.get("ok") else "err:" + str(reply.get("error"))[:60]) + "\\n")
"""


def sparse_image(env, name, size, owner=NOBODY, where=None) -> Path:
    """A valid SIF whose file goes on, sparse, to `size` bytes (a few KiB of real data)."""
    p = env.user_image(name, owner=owner, where=where)
    os.truncate(p, size)
    return p


def test_an_unprivileged_request_without_a_policy_keeps_nothing(node):
    """Without a policy the stager kept every copy unverified: any user could fill the
    store (and its filesystem) with arbitrary images — 36 KiB of real data truncated to
    4 GiB became a 4 GiB object. Only root may stage without a policy now."""
    imgs = [node.user_image(f"junk{i}.sif") for i in range(4)]
    for i, p in enumerate(imgs):
        with open(p, "r+b") as f:
            f.seek(0, 2)
            f.write(os.urandom(64) + bytes([i]))          # distinct content each
    imgs.append(sparse_image(node, "sparse.sif", 1 << 30))
    for p in imgs:
        r = ask_as(node, p, {"path": str(p), "context": {}})
        assert r["ok"] is False and "policy" in r["error"], r
        r = ask_as(node, p, {"policy": "", "path": str(p)})
        assert r["ok"] is False, r
    assert node.objects() == []
    assert sum(f.stat().st_size for f in node.store.rglob("*") if f.is_file()) < (1 << 20)


def test_one_users_huge_images_never_take_every_copy_slot(node):
    """One user sends three 1 GiB images (a few KiB of real data each, sparse) at once: the
    stager copies two images at a time, and used to give both slots to that user, so
    another user's small image waited behind gigabytes of someone else's zeros. Now one
    uid runs at most (slots - 1) copies: the other user's image is staged while the
    first user's copies are still running."""
    order = node.base / "order"
    order.write_text("")
    os.chmod(order, 0o666)
    big = [sparse_image(node, f"big{i}.sif", 2 << 30) for i in range(3)]
    stager = node.stagers[0]
    victim_home = node.base / "home1000"
    victim_home.mkdir(mode=0o755)
    os.chown(victim_home, OTHER, OTHER)
    mine = node.user_image("mine.sif", sign=True, owner=OTHER, where=victim_home)

    def io_read():
        with open(f"/proc/{stager.pid}/io") as f:
            return int(next(x for x in f if x.startswith("rchar:")).split()[1])
    r0 = io_read()
    attackers = [spawn_as(ASKER, node.sock, b, node.policy, b, order, f"attacker{i}") for i, b in enumerate(big)]
    try:
        deadline = time.monotonic() + 60
        while io_read() - r0 < (64 << 20) and time.monotonic() < deadline:   # a big copy is under way
            time.sleep(0.02)
        victim = spawn_as(ASKER, node.sock, mine, node.policy, mine, order, "victim", uid=OTHER)
        deadline = time.monotonic() + 120
        while victim.poll() is None and time.monotonic() < deadline:
            read_by_then = io_read() - r0
            time.sleep(0.005)
        read_by_then = io_read() - r0
        reap(victim)
        for a in attackers:
            a.wait(300)
    finally:
        for p in attackers:
            reap(p)
    lines = order.read_text().split("\n")
    assert lines[0] == "victim ok", lines
    # a copy slot frees only when an attacker's copy has read its whole image: the victim
    # was staged before the stager had read that much, so it never waited for one
    assert read_by_then < (2 << 30), read_by_then
    assert all(x.startswith("attacker") for x in lines[1:4]), lines
    assert node.objects() != [] and len(node.objects()) == 1      # only the signed image is kept


# === the cold path: who answers on the socket ===========================================

FAKE_STAGER = """
import json, os, socket, struct, sys
path, digest = sys.argv[1:3]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o666)
s.listen(8)
while True:
    c, _ = s.accept()
    try:
        msg, fds, _, _ = socket.recv_fds(c, 65536, 4)
        for f in fds:
            os.close(f)
        v = {"allowed": True, "decision": "allow", "rule": "default", "reason": "trust me"}
        data = json.dumps({"ok": True, "digest": digest, "object": "x", "how": "indexed", "verdict": v,
                           "allowed": True}).encode()
        c.sendall(struct.pack(">I", len(data)) + data)
    finally:
        c.close()
"""


def test_a_socket_a_user_bound_is_not_the_stager(env):
    """The stager's socket sits in a directory users can write and the stager is down: a
    user binds a fake stager there that answers every request "allowed" with the digest
    of an object the user got into the store (an unsigned image under a `require: any`
    path). Another user's shim believed the reply and ran the attacker's
    bytes in place of its own image. The shim now talks only to a root peer
    (SO_PEERCRED), and falls back to its own sealed copy."""
    env.start_stager()
    env.install()
    planted = env.user_image("planted.sif", where=env.any_dir)   # unsigned, where a rule needs none
    r = ask_as(env, planted, {"policy": str(env.policy), "path": str(planted), "context": {}})
    assert r["ok"] and r["object"], r                  # kept: its rule needs no signature
    evil = r["digest"]
    env.stop()
    sock = env.any_dir / "stager.sock"                # a socket path in a directory users can write
    env.install(socket_path=sock)
    fake = spawn_as(FAKE_STAGER, sock, evil)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        victim_home = env.base / "home1000"
        victim_home.mkdir(mode=0o755)
        os.chown(victim_home, OTHER, OTHER)
        mine = env.user_image("mine.sif", sign=True, owner=OTHER, where=victim_home)
        rc, err, rec = shim_as(env, ["run", mine], uid=OTHER, cwd=str(victim_home))
    finally:
        reap(fake)
    assert rec is not None, err
    assert rec["sha"] != sha256(env.store / "objects" / f"{evil}.sif")
    assert evil not in " ".join(rec["argv"])
    assert rec["argv"][1].startswith("/proc/self/fd/")         # its own sealed, verified copy


# === confused deputy: `store stage`, run by root on a path a user controls ==============

def test_store_stage_as_root_never_opens_what_a_users_symlink_points_at(env):
    """An admin stages an image from a user's directory; the user made it a symlink to a
    FIFO (or a device). `store stage` opened whatever the name led to for reading, as
    root, before checking what it was — waking the FIFO's writer here; a tape device
    rewinds, a watchdog arms. Now only a regular file is ever opened."""
    fifo = env.home / "fifo"
    os.mkfifo(fifo, 0o600)
    link = env.home / "image.sif"
    os.symlink(fifo, link)
    opened = threading.Event()

    def writer():
        fd = os.open(fifo, os.O_WRONLY)        # blocks until someone opens the FIFO for reading
        opened.set()
        os.close(fd)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    r = run_cli("store", "stage", link, "--store", env.store, timeout=30)
    assert r.rc == 2 and "not a regular file" in r.err and r.err.count("\n") == 1, r
    woke = opened.wait(1.0)
    if not woke:                               # release the writer ourselves
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    t.join(5)
    assert not woke, "store stage opened the FIFO for reading"
    for target in ("/dev/null", "/dev/zero", str(env.home)):
        os.unlink(link)
        os.symlink(target, link)
        r = run_cli("store", "stage", link, "--store", env.store, timeout=30)
        assert r.rc == 2 and r.err.count("\n") == 1, (target, r)
    # a symlink to a real image is still fine (admins use them), and the rule is chosen
    # from the file opened, not the name
    os.unlink(link)
    os.symlink(env.signed, link)
    r = run_cli("store", "stage", link, "--store", env.store, "--policy", env.policy, "--json", timeout=60)
    assert r.rc == 0, r
    assert json.loads(r.out)["verdict"]["image"] == str(env.signed)


# === confused deputy: the descriptor sent ================================================

def _send_odd_fds(sock_path, targets, policy):
    out = {}
    for name, (path, flags) in targets.items():
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as e:
            out[name] = "open:" + errno.errorcode[e.errno]
            continue
        try:
            out[name] = client.ask(sock_path, fd, {"policy": policy, "path": path, "context": {}}, timeout=30)
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {e}"
        finally:
            os.close(fd)
    return out


def test_descriptors_that_do_not_grant_reading_get_nothing_staged(node):
    """The stager reads only through the descriptor the caller sends. Descriptors that
    name a file without granting its bytes — O_PATH on a root-only image or secret, a
    write-only descriptor on a file the user may write but not read, a directory — must
    stage nothing and show nothing; /proc/<pid>/fd of a root process cannot be opened."""
    secret_dir = node.base / "vault"
    secret_dir.mkdir(mode=0o711)                         # traversable, not readable
    root_img = secret_dir / "licensed.sif"
    shutil.copyfile(node.signed, root_img)
    os.chmod(root_img, 0o600)
    wo = node.home / "writeonly.sif"
    shutil.copyfile(node.signed, wo)
    os.chown(wo, NOBODY, NOBODY)
    os.chmod(wo, 0o200)
    stager_pid = node.stagers[0].pid
    targets = {"opath-root-image": (str(root_img), os.O_PATH), "opath-shadow": ("/etc/shadow", os.O_PATH),
               "write-only": (str(wo), os.O_WRONLY), "directory": (str(node.home), os.O_RDONLY),
               "proc-fd-of-root": (f"/proc/{stager_pid}/fd/0", os.O_RDONLY),
               "proc-root-of-root": (f"/proc/{stager_pid}/root{root_img}", os.O_PATH)}
    got = as_user(_send_odd_fds, str(node.sock), targets, str(node.policy))
    for name, r in got.items():
        assert not (isinstance(r, dict) and r.get("ok")), (name, r)
        assert "root:" not in str(r)
    assert got["proc-fd-of-root"].startswith("open:") and got["proc-root-of-root"].startswith("open:")
    assert node.objects() == [] and not os.listdir(node.store / "index")


def test_a_descriptor_of_a_user_namespace_file_decides_nothing_for_a_real_path(node):
    """A user in their own user+mount namespace bind-mounts their unsigned image over a
    path a permissive rule covers and sends that descriptor claiming the path. Whatever
    the stager records is keyed by the content and the candidate rules it claimed: the
    honest shim at the image's real path still refuses it and never runs it."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available")
    claimed = node.any_dir / "claimed.sif"
    claimed.write_text("")
    order = node.base / "ns-order"
    order.write_text("")
    os.chmod(order, 0o666)
    script = ("import os, subprocess, sys\n"
              f"subprocess.run(['mount', '--bind', {str(node.unsigned)!r}, {str(claimed)!r}], check=True)\n"
              "sys.argv = ['x'] + sys.argv[1:]\n" + ASKER)
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", unshare, "-Urm",
                        "/usr/bin/python3", "-I", "-c", script, str(node.sock), str(claimed), str(node.policy),
                        str(claimed), str(order), "ns"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and order.read_text() == "ns ok\n", (p.stderr[-500:], order.read_text())
    # the interpreter's libraries may be unreachable for nobody; what matters is the honest shim
    rc, err, rec = shim_as(node, ["run", node.unsigned])
    assert rec is None and "refused" in err


# === index and decision poisoning ========================================================

def test_a_lie_about_the_path_or_context_records_nothing_an_honest_shim_uses(node):
    """The request's `path` and `context` only choose candidate rules, and a decision is
    keyed by (content, policy, candidates): a user who claims a `require: any` path (or
    another user, or a permissive partition) for their unsigned image gets an answer for
    inputs they do not have — no honest shim looks it up. The user and group are always
    the peer's own."""
    extra = ("  - name: debug-any\n    match: {partition: debug}\n    require: any\n"
             "  - name: root-any\n    match: {user: root}\n    require: any\n")
    node.write_policy(extra_rules=extra)
    lies = [{"path": str(node.any_dir / "x.sif"), "context": {}},
            {"path": str(node.unsigned), "context": {"partition": "debug", "account": "a"}},
            {"path": str(node.unsigned), "context": {"user": "root", "group": "root"}}]
    digests = set()
    for lie in lies:
        r = ask_as(node, node.unsigned, {"policy": str(node.policy), **lie})
        assert r["ok"], r
        digests.add(r["digest"])
        assert r["verdict"]["context"].get("user") == "nobody", r
        if lie["context"].get("user") == "root":
            assert r["allowed"] is False and r["candidates"] != ["root-any"], r
    for _ in range(2):                                 # and again, when everything above is recorded
        rc, err, rec = shim_as(node, ["run", node.unsigned])
        assert rec is None and "refused" in err, err
    # nor did a lie keep the user's unverified bytes in the store (F8)
    assert node.objects() == []
    # the honest shim's own candidates (unknown partition: every rule it could be) have no record
    from sifguard.policy.decide import JobContext, UNKNOWN, candidate_rules
    pol = _loader.load(str(node.policy))
    fp = keys.policy_fingerprint(pol)
    assert len(digests) == 1
    digest = digests.pop()
    for ctx in (JobContext(user="nobody", group="nogroup"),
                JobContext(user="nobody", group="nogroup", account=UNKNOWN, partition=UNKNOWN)):
        names = tuple(r.name for r in candidate_rules(pol, str(node.unsigned), ctx))
        assert lookup.recorded_decision(Store(str(node.store)), digest, fp, names) is None, names


def test_hard_links_share_an_identity_but_never_a_decision(node):
    """One inode at two paths: allowed (and run) where a `require: any` rule covers the
    path, still refused at the path the default rule covers — the index shares the
    content, the decisions stay per candidate rules."""
    link = node.any_dir / "linked.sif"
    as_user(os.link, str(node.unsigned), str(link))
    rc, err, rec = shim_as(node, ["run", link])
    assert rec is not None, err
    rc, err, rec2 = shim_as(node, ["run", node.unsigned])
    assert rec2 is None and "refused" in err


def _data_object(path):
    from sifguard.sif.image import SifImage
    with SifImage(str(path)) as img:
        d = max(img.objects, key=lambda o: o.size)
        return d.offset, d.size


REWRITER = """
import os, sys
path, off = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR)
orig = os.pread(fd, 1, off)
bad = bytes([orig[0] ^ 0xFF])
while True:
    os.pwrite(fd, bad, off)
    os.pwrite(fd, orig, off)
"""


def test_a_file_rewritten_while_staged_and_run_never_runs_unverified_bytes(node):
    """A writer flips a byte of the image's data object as fast as it can while the
    user's tasks start: whatever the stager copied, only bytes that verified are ever
    given to the runtime (the copy is hashed as it is written, verified, then run)."""
    img = node.user_image("racy.sif", sign=True)
    good = sha256(img)
    off, size = _data_object(img)
    w = spawn_as(REWRITER, img, off + size // 2)
    try:
        runs = [shim_as(node, ["run", img]) for _ in range(25)]
    finally:
        reap(w)
    ran = [rec for _, _, rec in runs if rec is not None]
    assert all(rec["sha"] == good for rec in ran), [rec["sha"] for rec in ran]
    assert all(rec["argv"][1].startswith(str(node.store / "objects")) for rec in ran)
    for o in node.objects():
        assert sha256(node.store / "objects" / o) == good


def test_in_place_tamper_with_size_and_mtime_restored_is_refused(node):
    """Warm run, then the user rewrites the data object in place (same size) and puts the
    mtime back; or renames a tampered copy over it with the same size and mtime: the
    change time (which users cannot set) or the inode changes the index key, so the
    stager sees the new bytes, and they do not verify."""
    img = node.user_image("swap.sif", sign=True)
    rc, err, rec = shim_as(node, ["run", img])
    assert rec and rec["sha"] == sha256(img), err
    off, size = _data_object(img)
    st = img.stat()

    def tamper(path, off, atime, mtime):
        fd = os.open(path, os.O_RDWR)
        b = os.pread(fd, 1, off)
        os.pwrite(fd, bytes([b[0] ^ 1]), off)
        os.close(fd)
        os.utime(path, ns=(atime, mtime))
        return True
    as_user(tamper, str(img), off + 10, st.st_atime_ns, st.st_mtime_ns)
    assert img.stat().st_mtime_ns == st.st_mtime_ns and img.stat().st_size == st.st_size
    rc, err, rec = shim_as(node, ["run", img])
    assert rec is None and "refused" in err, err

    img2 = node.user_image("swap2.sif", sign=True)
    rc, err, rec = shim_as(node, ["run", img2])
    assert rec is not None, err
    st2 = img2.stat()

    def rename_over(path, off, atime, mtime):
        tmp = path + ".t"
        with open(path, "rb") as f, open(tmp, "wb") as g:
            data = bytearray(f.read())
            data[off] ^= 1
            g.write(data)
        os.utime(tmp, ns=(atime, mtime))
        os.replace(tmp, path)
        return True
    as_user(rename_over, str(img2), off + 10, st2.st_atime_ns, st2.st_mtime_ns)
    rc, err, rec = shim_as(node, ["run", img2])
    assert rec is None and "refused" in err, err


def test_tmpfs_writes_through_a_mapping_change_no_identity_but_never_what_runs(node):
    """On tmpfs a write through a shared mapping changes neither mtime nor ctime, so a
    staged file's identity survives its bytes changing: the index then names the copy
    verified earlier. What runs is that verified copy — never the rewritten file."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    d = Path(tempfile.mkdtemp(prefix="sg-attack-", dir=shm))
    try:
        os.chmod(d, 0o755)
        os.chown(d, NOBODY, NOBODY)
        img = node.user_image("shm.sif", sign=True, where=d)
        good = sha256(img)
        rc, err, rec = shim_as(node, ["run", img])
        assert rec and rec["sha"] == good, err
        off, size = _data_object(img)

        def scribble(path, off):
            fd = os.open(path, os.O_RDWR)
            before = os.fstat(fd)
            m = mmap.mmap(fd, 0)
            m[off] ^= 0xFF
            m.flush()
            m.close()
            after = os.fstat(fd)
            os.close(fd)
            return [before.st_ctime_ns == after.st_ctime_ns, before.st_mtime_ns == after.st_mtime_ns]
        same = as_user(scribble, str(img), off + 10)
        assert sha256(img) != good
        rc, err, rec = shim_as(node, ["run", img])
        print("tmpfs mapping write kept ctime/mtime:", same, "ran:", rec is not None)
        if rec is not None:                        # identity unchanged (tmpfs): the verified copy ran
            assert rec["sha"] == good and rec["argv"][1].startswith(str(node.store)), (same, rec)
        else:                                      # identity changed: restaged, and it does not verify
            assert "refused" in err
    finally:
        shutil.rmtree(d, ignore_errors=True)


# === the warm path: locks, collection, what is exec'd ====================================

def _staged_digest(env, img) -> str:
    with open(img, "rb") as f:
        st = os.fstat(f.fileno())
        return lookup.indexed_digest(Store(str(env.store)), lookup.source_key(f.fileno(), st), st)


HOLDER = """
import fcntl, os, struct, sys, time
path, mode = sys.argv[1:3]
fd = os.open(path, os.O_RDONLY)
if mode == "ofd-read":
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0))
elif mode == "flock-ex":
    fcntl.flock(fd, fcntl.LOCK_EX)
elif mode == "posix-read":
    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(600)
"""


def hold(path, mode, uid=NOBODY) -> subprocess.Popen:
    p = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3",
                          "-I", "-c", HOLDER, str(path), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read() if p.poll() is not None else ""
    return p


def test_the_runtime_gets_the_store_copy_and_holds_it_read_only(node):
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    obj = rec["argv"][1]
    assert obj.startswith(str(node.store / "objects") + "/") and rec["sha"] == sha256(node.signed)
    held = [n for n, t in rec["fds"].items() if t == obj]
    assert held, rec["fds"]                     # the in-use lock came across exec
    assert not any(str(node.signed) == t for t in rec["fds"].values())   # the user's file is not held open
    # nothing else of the shim's crosses exec: no socket to the stager, no record, no directory
    others = {n: t for n, t in rec["fds"].items() if n not in ("0", "1", "2") and t != obj}
    assert all(not t.startswith(("socket:", str(node.store))) for t in others.values()), others
    st = os.stat(obj)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o444


def test_users_cannot_take_a_write_lock_and_their_locks_never_block_other_users(node):
    """Locks on an entry a user can name: a write lock needs a writable descriptor (none
    for a 0444 root file); a user's read lock, flock or POSIX lock never makes another
    user's shim wait or fail; a read lock (OFD, what a running task holds, or POSIX) delays
    only that entry's collection (users can delay the collection of entries they can run,
    as designed); a flock does not stop it."""
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    digest = _staged_digest(node, node.signed)
    obj = node.store / "objects" / f"{digest}.sif"

    def write_lock(path):
        out = []
        for flags in (os.O_RDWR, os.O_WRONLY):
            try:
                os.close(os.open(path, flags))
                out.append("opened")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
            out.append("locked")
        except OSError as e:
            out.append(errno.errorcode[e.errno])
        return out
    assert as_user(write_lock, str(obj)) == ["EACCES", "EACCES", "EBADF"]

    def other_users_entry(store, digest):
        e = lookup.open_entry(Store(store), digest)
        return e is not None
    holders = [hold(obj, m) for m in ("ofd-read", "posix-read", "flock-ex")]
    try:
        assert as_user(other_users_entry, str(node.store), digest, uid=OTHER, timeout=20) is True
        victim_home = node.base / "home1000"
        victim_home.mkdir(mode=0o755)
        os.chown(victim_home, OTHER, OTHER)
        theirs = node.user_image("theirs.sif", sign=True, owner=OTHER, where=victim_home)
        rc, err, rec = shim_as(node, ["run", theirs], uid=OTHER, cwd=str(victim_home))
        assert rec is not None, err
        res = gc.collect(Store(str(node.store)), 0)
        assert digest in res.kept_in_use and obj.exists()     # the OFD read lock: a task is running it
    finally:
        for h in holders[:2]:
            reap(h)
    res = gc.collect(Store(str(node.store)), 0)
    try:
        assert digest in res.removed and not obj.exists(), res.as_dict()   # a flock does not pin it
    finally:
        for h in holders[2:]:
            reap(h)


def test_an_entry_collected_under_a_user_is_staged_again_not_run_half_gone(node):
    """gc removes an entry between two runs (nobody holds it): the next shim finds no
    entry, asks the stager, and runs a fresh verified copy; records of removed entries
    are swept."""
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    digest = _staged_digest(node, node.signed)
    res = gc.collect(Store(str(node.store)), 0)
    assert digest in res.removed
    assert lookup.open_entry(Store(str(node.store)), digest) is None
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec and rec["sha"] == sha256(node.signed), err
    assert (node.store / "objects" / f"{digest}.sif").exists()


def test_lookups_ignore_records_not_solely_roots(node):
    """Records are trusted only when root wrote them and nobody else can change them:
    a record that is a symlink, not root's, or group/other-writable is a miss (the shim
    then asks the stager), never a verdict."""
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    store = Store(str(node.store))
    digest = _staged_digest(node, node.signed)
    decisions = [node.store / "decisions" / n for n in os.listdir(node.store / "decisions")]
    assert decisions
    d = decisions[0]
    data = d.read_bytes()
    for how in ("symlink", "chown", "chmod"):
        d.unlink(missing_ok=True)
        if how == "symlink":
            real = node.store / "decisions" / ".real"
            real.write_bytes(data)
            os.chmod(real, 0o444)
            os.symlink(real, d)
        else:
            d.write_bytes(data)
            os.chmod(d, 0o444)
            if how == "chown":
                os.chown(d, NOBODY, NOBODY)
            else:
                os.chmod(d, 0o666)
        assert records.read(str(d)) is None, how

        def warm(store_dir, img, policy):
            pol = _loader.load(policy)
            from sifguard.policy.decide import JobContext, candidate_rules
            names = tuple(r.name for r in candidate_rules(pol, img, JobContext(user="nobody", group="nogroup")))
            fd = os.open(img, os.O_RDONLY)
            w = lookup.warm(Store(store_dir), fd, os.fstat(fd), keys.policy_fingerprint(pol), names)
            return w is not None
        assert as_user(warm, str(node.store), str(node.signed), str(node.policy)) is False, how
        if d.is_symlink() or d.exists():
            d.unlink()
        (node.store / "decisions" / ".real").unlink(missing_ok=True)
    # and the shim still works (cold: the stager records a fresh decision)
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec and rec["sha"] == sha256(node.signed), err
    assert records.read(str(store.decision_path(os.path.basename(str(d))[:-5]))) is not None


def test_a_group_or_world_writable_store_directory_is_refused_not_used(node):
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    for sub in ("objects", "decisions", "index", "."):
        p = node.store / sub
        mode = stat.S_IMODE(p.stat().st_mode)
        os.chmod(p, mode | 0o002)
        try:
            rc, err, rec = shim_as(node, ["run", node.signed])
            assert rec is None and "writable by group or others" in err, (sub, err)
        finally:
            os.chmod(p, mode)


# === DoS on the stager's socket ==========================================================

def _stager_fds(env) -> int:
    return len(os.listdir(f"/proc/{env.stagers[0].pid}/fd"))


def _wait_fds(env, at_most, bound=20.0) -> int:
    deadline = time.monotonic() + bound
    n = _stager_fds(env)
    while n > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
        n = _stager_fds(env)
    return n


def test_one_users_idle_connections_never_lock_out_other_users(node):
    """A user opens more connections than the per-user bound and sends nothing: the
    extra ones are told the stager is busy; another user's shim is still served."""
    def flood(sock_path, n):
        conns, busy = [], 0
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(sock_path)
            conns.append(s)
        time.sleep(0.5)
        for s in conns:
            s.setblocking(False)
            try:
                if s.recv(65536):
                    busy += 1
            except BlockingIOError:
                pass
        victim = os.fork()
        if victim == 0:
            os._exit(0)
        os.waitpid(victim, 0)
        return busy
    before = _stager_fds(node)
    holder = threading.Thread(target=lambda: as_user(flood, str(node.sock), 40, timeout=60))
    holder.start()
    time.sleep(0.3)
    victim_home = node.base / "home1000"
    victim_home.mkdir(mode=0o755)
    os.chown(victim_home, OTHER, OTHER)
    theirs = node.user_image("theirs.sif", sign=True, owner=OTHER, where=victim_home)
    rc, err, rec = shim_as(node, ["run", theirs], uid=OTHER, cwd=str(victim_home))
    holder.join(60)
    assert rec and rec["argv"][1].startswith(str(node.store)), err
    assert _wait_fds(node, before) <= before        # every connection closed when its client went


def _slow_client(sock_path, how):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    t0 = time.monotonic()
    try:
        if how == "prefix-then-stall":
            s.sendall(struct.pack(">I", 100))
        elif how == "trickle":
            s.sendall(struct.pack(">I", 200))
        elif how == "huge":
            s.sendall(struct.pack(">I", 0xFFFFFFF0) + b"{")
        elif how == "nothing":
            pass
        elif how == "deep-json":
            body = b"[" * 60000 + b"]" * 60000
            s.sendall(struct.pack(">I", len(body)) + body)
        while True:
            if how == "trickle":
                s.settimeout(1.0)
                try:
                    s.send(b" ")
                except OSError:
                    pass
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    if time.monotonic() - t0 > 25:
                        return "still open after 25 s"
                    continue
            else:
                data = s.recv(65536)
            if not data:
                return "closed"
            return "answered: " + data[4:200].decode(errors="replace")
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        return "still open after 30 s"
    finally:
        s.close()


@pytest.mark.parametrize("how", ["nothing", "prefix-then-stall", "trickle", "huge", "deep-json"])
def test_slow_and_oversized_requests_are_cut_off(node, how):
    """Slowloris: connect and send nothing, a length prefix then nothing, a trickle of a
    byte a second (each recv within the per-read timeout — the request's time bound must
    be for the whole request), a 4 GiB length prefix. Each connection is answered or
    closed within the request bound, and the stager serves the next user."""
    got = as_user(_slow_client, str(node.sock), how, timeout=60)
    assert "Traceback" not in node.stager_log()
    assert got == "closed" or got.startswith("answered: ") and '"ok":false' in got.replace(" ", ""), got
    r = ask_as(node, node.signed, {"policy": str(node.policy), "path": str(node.signed), "context": {}})
    assert r["ok"] and r["allowed"], r


def _many_fds(sock_path, image, n, policy):
    fds = [os.open(image, os.O_RDONLY) for _ in range(n)]
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    data = json.dumps({"policy": policy, "path": image, "context": {}}).encode()
    socket.send_fds(s, [struct.pack(">I", len(data)) + data], fds)
    reply = s.recv(65536)
    s.close()
    return json.loads(reply[4:]) if len(reply) > 4 else {}


def test_a_request_carrying_hundreds_of_descriptors_is_refused_and_leaks_none(node):
    before = _stager_fds(node)
    for n in (2, 5, 250):
        r = as_user(_many_fds, str(node.sock), str(node.signed), n, str(node.policy))
        assert r.get("ok") is False and "exactly one" in r.get("error", ""), (n, r)
    assert _wait_fds(node, before) <= before
    r = ask_as(node, node.signed, {"policy": str(node.policy), "path": str(node.signed), "context": {}})
    assert r["ok"], r


def test_an_image_bigger_than_the_free_space_is_refused_before_any_copy(node):
    """A sparse file claiming more than the store's filesystem has free is refused at
    once (nothing copied, nothing left in tmp/)."""
    free = shutil.disk_usage(node.store).free
    img = sparse_image(node, "huge.sif", free + (1 << 30))
    r = ask_as(node, img, {"policy": str(node.policy), "path": str(img), "context": {}})
    assert r["ok"] is False and "full" in r["error"], r
    assert node.objects() == [] and os.listdir(node.store / "tmp") == []
    os.truncate(img, 15 << 40)                      # 15 TiB (ext4's largest file), a few KiB of data
    r = ask_as(node, img, {"policy": str(node.policy), "path": str(img), "context": {}})
    assert r["ok"] is False and "full" in r["error"], r


def test_max_image_bounds_what_one_request_can_make_the_stager_read(env):
    env.start_stager("--max-image", "64M")
    env.install()
    img = sparse_image(env, "big.sif", 256 << 20)
    r = ask_as(env, img, {"policy": str(env.policy), "path": str(img), "context": {}})
    assert r["ok"] is False and "limit" in r["error"], r


# === policy fingerprint: shim and stager must agree, and only on the same policy =========

def _stager_requests(env) -> int:
    return sum(1 for line in env.stager_log().splitlines() if line.startswith("sifguard-stager: uid "))


def test_second_run_is_warm_shim_and_stager_agree_on_the_fingerprint(node):
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    n = _stager_requests(node)
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec and rec["sha"] == sha256(node.signed), err
    assert _stager_requests(node) == n            # warm: decided from the records, the stager not asked


def test_a_policy_or_trust_root_change_is_never_answered_by_an_old_decision(node):
    """An allowing decision is recorded for 5 minutes. The admin then tightens the rule (a
    signer the image does not have) or replaces the trust root at the same path: the very
    next run is decided again, under the new policy, and refused."""
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    text = node.policy.read_text()
    node.policy.write_text(text.replace("  - name: default\n    require: signed\n",
                                        "  - name: default\n    require: signed\n    signers: [{email: 'x@else.example'}]\n"))
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec is None and "refused" in err, err
    node.policy.write_text(text)
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec, err
    other = SiteChain(node.base / "etc", cn="other")
    shutil.copyfile(other.root_pem, node.site.root_pem)         # same path, another root
    rc, err, rec = shim_as(node, ["run", node.signed])
    assert rec is None and "refused" in err, err


def test_a_decision_under_another_root_owned_policy_is_not_used(node):
    """Another root-owned policy exists on the node (a permissive one for a test
    partition, an example file): a user has the stager decide their unsigned image under
    it — allowed, and kept. The shim, configured with the site policy, never uses that."""
    lax = node.etc / "lax.yaml"
    lax.write_text(f"version: 1\ntrust: {{roots: [{node.site.root_pem}]}}\nrevocation: {{mode: off}}\n"
                   "rules:\n  - name: default\n    require: any\n")
    os.chmod(lax, 0o644)
    r = ask_as(node, node.unsigned, {"policy": str(lax), "path": str(node.unsigned), "context": {}})
    assert r["ok"] and r["allowed"] and r["candidates"] == ["default"], r
    for _ in range(2):
        rc, err, rec = shim_as(node, ["run", node.unsigned])
        assert rec is None and "refused" in err, err


def test_trust_roots_the_user_cannot_read_make_every_run_cold_but_still_right(node):
    os.chmod(node.site.root_pem, 0o600)
    for _ in range(2):
        rc, err, rec = shim_as(node, ["run", node.signed])
        assert rec and rec["sha"] == sha256(node.signed), err
    rc, err, rec = shim_as(node, ["run", node.unsigned])
    assert rec is None and "refused" in err


def test_unverified_bytes_are_kept_only_for_the_path_really_opened(node):
    """F8: claiming a `require: any` path for one's own unsigned file kept it in the store
    (unbounded, unverified, and one bug away from running in another user's job — see
    the fake-stager test). The stager now keeps an unverified copy for a non-root caller
    only when the descriptor is the file at the path claimed; the honest case still
    runs, and an allowed image the stager did not keep runs from a sealed copy."""
    for claim in (str(node.any_dir / "x.sif"), str(node.any_dir / ".." / "any" / "x.sif"), ""):
        r = ask_as(node, node.unsigned, {"policy": str(node.policy), "path": claim, "context": {}})
        assert r["ok"] and not r["object"], (claim, r)
    assert node.objects() == []
    honest = node.user_image("honest.sif", where=node.any_dir)
    rc, err, rec = shim_as(node, ["run", honest])
    assert rec and rec["argv"][1].startswith(str(node.store)), err
    assert len(node.objects()) == 1


def test_an_audit_rule_image_runs_its_own_bytes_not_refused(env):
    """`action: audit` allows (and logs) an image that does not verify; the shim used to
    refuse it as 'allowed but not in the store'. The stager keeps a copy of unverified
    bytes only for the path the caller really opened and only if every rule the job's
    unconfirmed attributes could select allows it — here it does, so the run uses the
    store's copy of exactly those bytes."""
    trial = env.base / "trial"
    trial.mkdir(mode=0o755)
    os.chown(trial, NOBODY, NOBODY)
    env.write_policy(extra_rules=f"  - name: trial\n    match: {{path: \"{trial}/**\"}}\n    action: audit\n")
    env.start_stager()
    env.install()
    img = env.user_image("u.sif", where=trial)
    rc, err, rec = shim_as(env, ["run", img])
    assert rec and rec["sha"] == sha256(img), err
    assert rec["argv"][1].startswith("/proc/self/fd/") or rec["argv"][1] == os.path.join(
        str(env.store), "objects", env.objects()[0]), rec


def test_root_inside_a_user_namespace_is_still_the_user_to_the_stager(node):
    """A user who is uid 0 in their own user namespace asks without a policy (root only)
    and claims to be root: SO_PEERCRED gives the stager the real uid, so both are
    refused as for the user they are."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "-Ur", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available")
    order = node.base / "userns-order"
    order.write_text("")
    os.chmod(order, 0o666)
    script = "import os, sys\nassert os.getuid() == 0\nsys.argv = ['x'] + sys.argv[1:]\n" + ASKER
    for policy, tag in (("", "nopolicy"), (str(node.policy), "withpolicy")):
        p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", unshare, "-Ur",
                            "/usr/bin/python3", "-I", "-c", script, str(node.sock), str(node.unsigned), policy,
                            str(node.unsigned), str(order), tag], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-500:]
    lines = order.read_text().splitlines()
    assert lines[0].startswith("nopolicy err:") and "policy" in lines[0], lines
    assert node.objects() == []
    assert "uid 65534" in node.stager_log()


def test_records_of_images_never_kept_do_not_pile_up_past_a_collection(node):
    """Every refused image leaves an index record and a findings record (so asking again
    costs no copy). A user can make any number of them (a new file each time); `store gc`
    must sweep those that name no stored copy, or they grow without bound."""
    for i in range(12):
        img = node.user_image(f"junk{i}.sif")
        with open(img, "ab") as f:
            f.write(os.urandom(32))
        r = ask_as(node, img, {"policy": str(node.policy), "path": str(img), "context": {}})
        assert r["ok"] and not r["allowed"], r
    rc, err, rec = shim_as(node, ["run", node.signed])          # one image really kept
    assert rec, err

    def count(sub):
        return len([n for n in os.listdir(node.store / sub) if not n.startswith(".")])
    assert count("index") >= 12 and count("findings") >= 12
    res = gc.collect(Store(str(node.store)), 1 << 40)
    assert count("index") == 1 and count("findings") == 1, res.as_dict()
    assert node.objects() != []
    rc, err, rec = shim_as(node, ["run", node.signed])          # and the kept one is still warm
    assert rec, err


def test_collection_racing_task_starts_never_pulls_the_image_from_under_the_runtime(node):
    """`store gc --budget 0` runs in a loop while tasks start: each task either finds its
    entry and holds it (so the collector skips it) or restages it — the runtime always
    finds the verified copy at the path it was given (the stand-in hashes it after exec)."""
    stop = threading.Event()
    removed = []

    def collector():
        while not stop.is_set():
            removed.extend(gc.collect(Store(str(node.store)), 0).removed)
    t = threading.Thread(target=collector, daemon=True)
    t.start()
    try:
        runs = [shim_as(node, ["run", node.signed]) for _ in range(15)]
    finally:
        stop.set()
        t.join(30)
    good = sha256(node.signed)
    for rc, err, rec in runs:
        assert rec is not None and rec["sha"] == good, (err, rec)
    assert removed                                   # the collector really did remove it in between


def test_a_policy_configured_through_a_symlink_still_runs_warm(env):
    """The stager loads a policy only by its canonical path (F1); the shim by the name it
    was installed with. A site whose policy path goes through a symlink (config
    management often does that) must still get warm runs: the fingerprint is of the
    policy and its trust material, not of how their paths are spelled."""
    link = env.base / "etc-current"
    os.symlink(env.etc, link)
    os.mkdir(env.etc / ("policy.yaml" + _loader.COMPILED_SUFFIX))   # no compiled snapshot (a read-only /etc)
    env.start_stager()
    env.install(policy=link / "policy.yaml")
    rc, err, rec = shim_as(env, ["run", env.signed])
    assert rec, err
    n = _stager_requests(env)
    rc, err, rec = shim_as(env, ["run", env.signed])
    assert rec and rec["sha"] == sha256(env.signed), err
    assert _stager_requests(env) == n


def test_a_per_user_byte_bound_stops_one_user_filling_the_store(env):
    """F13: nothing bounded what one user's requests keep (a user with a signing
    certificate, or a writable `require: any` directory, can stage image after image).
    With `store serve --max-bytes-per-user`, copies over a user's bound are not kept — the
    images are still decided and run, from sealed copies — and other users are unaffected."""
    env.start_stager("--max-bytes-per-user", "100K")
    env.install()
    imgs = []
    for i in range(4):
        img = env.user_image(f"s{i}.sif", sign=True)
        imgs.append(img)
        rc, err, rec = shim_as(env, ["run", img])
        assert rec and rec["sha"] == sha256(img), err         # every one runs
        if i >= 2:
            assert rec["argv"][1].startswith("/proc/self/fd/"), rec   # over the bound: a sealed copy
    assert len(env.objects()) == 2                               # 2 x ~38 KiB kept, the rest not
    victim_home = env.base / "home1000"
    victim_home.mkdir(mode=0o755)
    os.chown(victim_home, OTHER, OTHER)
    theirs = env.user_image("theirs.sif", sign=True, owner=OTHER, where=victim_home)
    rc, err, rec = shim_as(env, ["run", theirs], uid=OTHER, cwd=str(victim_home))
    assert rec and rec["argv"][1].startswith(str(env.store)), err
