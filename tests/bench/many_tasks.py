#!/usr/bin/env python3
"""Many tasks, one image: the verified image store against today's sealed in-memory copies.

Part 1 — N ∈ --tasks concurrent shim invocations × image ∈ --sizes, as user nobody
(setpriv --reuid=65534 --regid=65534 --clear-groups), each case:

  bare     the stand-in runtime launched directly (the baseline every overhead subtracts)
  cold     the store shim, fresh empty store directory and a restarted stager
  warm     the same again right after (index + recorded decision: no hashing)
  memfd    hooks installed without --store (a sealed in-memory copy per task)

and per case: wall time to the last exec, per-task overhead (launch → stand-in start, minus
the median of the same for the bare stand-in at the same N), Shmem growth (peak of
/proc/meminfo Shmem minus its baseline, sampled every 20 ms), hash passes and copies (the
stager's log lines and its /proc/PID/io rchar, the objects/ directory).

Part 2 — a shared store: K = --nodes simulated nodes, each with its own hook install,
policy copy and OCSP cache, all sharing one store directory and one OCSP shared cache,
served by --stagers stager processes (nodes spread round-robin), start one job each of
the same image at once; counts hash passes, copies and the OCSP requests a counting proxy
in front of `sifguard ca serve` saw, per certificate.

The stand-in runtime is a small C program (built with cc here) that records
clock_gettime(CLOCK_REALTIME) and its argv. Setup runs as root, tasks as nobody.

Usage: tests/bench/many_tasks.py [--sizes 40K,1G] [--tasks 1,8,32] [--nodes 100]
       [--stagers 10] [--skip-memfd] [--quick] [--keep]
"""
import argparse
import collections
import http.client
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
from benchlib import SG, compile_bytecode, free_port, make_ca, sign  # noqa: E402

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
MiB = 1 << 20

STANDIN_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* stand-in runtime: when it started (CLOCK_REALTIME ns), whether it can read the image
   operand (argv[2]), and its argv, to $SGB_OUT/$SGB_TASK; then exit 0 */
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *dir = getenv("SGB_OUT"), *task = getenv("SGB_TASK");
    if (!dir || !task) return 3;
    int readable = 0;
    if (argc > 2) {
        char b[4];
        int fd = open(argv[2], O_RDONLY);
        if (fd >= 0) { readable = read(fd, b, 4) == 4 && memcmp(b, "#!/u", 4) == 0 ? 1 : 0; close(fd); }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, task);
    FILE *f = fopen(path, "w");
    if (!f) return 4;
    fprintf(f, "%lld %d", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, readable);
    for (int i = 1; i < argc; i++) fprintf(f, " %s", argv[i]);
    fputc('\n', f);
    return fclose(f) ? 5 : 0;
}
"""


# --- small helpers ------------------------------------------------------------------
def human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if n == int(n) else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def parse_size(text: str) -> int:
    from sifguard.cli.slurm_cmds import _size
    return _size(text)


def sg(*args, **kw):
    p = subprocess.run(SG + [str(a) for a in args], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"setup failed: sifguard {' '.join(map(str, args))}: {p.stderr.strip()[-2000:]}")
    return p


def shmem_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1])
    return 0


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rchar(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ShmemSampler:
    """Peak of /proc/meminfo Shmem over a block, sampled every `every` seconds — and, since
    Shmem is machine-wide (other work on the machine moves it), the peak total size of the
    memfds our own processes (`pids()`) hold, sampled alongside."""

    def __init__(self, pids=lambda: [], every: float = 0.02):
        self.every = every
        self.pids = pids
        self.base = shmem_kib()
        self.peak = self.base
        self.own_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _own(self) -> int:
        seen, total = set(), 0
        for pid in self.pids():
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for n in names:
                try:
                    if not os.readlink(f"/proc/{pid}/fd/{n}").startswith("/memfd:"):
                        continue
                    st = os.stat(f"/proc/{pid}/fd/{n}")
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, shmem_kib())
            self.own_peak = max(self.own_peak, self._own())
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, shmem_kib())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024

    @property
    def own_mib(self) -> float:
        return self.own_peak / MiB


def make_sif(path: str, size: int) -> None:
    """A SIF of about `size` bytes: a definition object and one random data partition."""
    from sifguard.sif.image import NewObject, create
    part = path + ".part"
    with open(part, "wb") as f:
        left = max(size - 4096, 1024)
        while left > 0:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    create(path, [NewObject(0x4001, data=b"Bootstrap: scratch\n", group=1),
                  NewObject(0x4004, path=part, group=1, extra=struct.pack("<ii", 1, 2) + b"02\x00")])
    os.unlink(part)
    os.chmod(path, 0o644)


def pick_hook_python(explicit: str | None) -> str:
    """An interpreter user nobody can run that has sifguard's dependencies (the hooks run
    as the job's user: a Python under a 0700 home will not do)."""
    cands = [explicit] if explicit else [sys.executable, "/opt/sifguard-cluster-venv/bin/python", "/usr/bin/python3"]
    for py in cands:
        if py and subprocess.run(NOBODY + [py, "-c", "import cryptography, yaml, requests"], capture_output=True,
                                 cwd="/").returncode == 0:
            return py
    sys.exit(f"no interpreter user nobody can run with cryptography, yaml and requests among {cands}; "
             "give one with --hook-python (e.g. a venv from /usr/bin/python3 with `pip install .`)")


# --- OCSP counting proxy ------------------------------------------------------------
class CountingProxy:
    """An HTTP proxy on 127.0.0.1:port in front of the responder: counts OCSP requests per
    certificate serial (GET and POST), and any other request by path."""

    def __init__(self, port: int, backend_port: int):
        self.counts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def _forward(self, body: bytes | None):
                der = body
                if der is None:
                    import base64
                    tail = urllib.parse.unquote(self.path.rsplit("/", 1)[-1])
                    try:
                        der = base64.b64decode(tail, validate=False)
                    except ValueError:
                        der = None
                proxy.count(self.command, self.path, der)
                c = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=10)
                try:
                    c.request(self.command, self.path, body=body, headers={
                        k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")})
                    r = c.getresponse()
                    data = r.read()
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() in ("content-type", "cache-control", "expires", "last-modified", "etag"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:              # the client gave up waiting (its OCSP budget ran out)
                    proxy.count("hung-up", "", None)
                finally:
                    c.close()

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self._forward(self.rfile.read(n))

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.srv.daemon_threads = True
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def count(self, method: str, path: str, der: bytes | None) -> None:
        from cryptography.x509 import ocsp
        key = "client hung up before the answer" if method == "hung-up" else f"other {method} {path[:60]}"
        if der:
            try:
                req = ocsp.load_der_ocsp_request(der)
                key = f"ocsp serial {req.serial_number:x}"
            except Exception:  # noqa: BLE001 - not an OCSP request (a CRL fetch, …)
                pass
        with self.lock:
            self.counts[key] += 1

    def snapshot(self) -> collections.Counter:
        with self.lock:
            return collections.Counter(self.counts)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def start_responder(ca: str, port: int) -> subprocess.Popen:
    srv = subprocess.Popen(SG + ["ca", "serve", "--ca", ca, "--listen", f"127.0.0.1:{port}", "--workers", "2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return srv
        except OSError:
            if srv.poll() is not None:
                sys.exit("ca serve exited at start")
            time.sleep(0.05)
    srv.terminate()
    sys.exit("ca serve did not come up")


# --- stagers --------------------------------------------------------------------------
class Stager:
    """`sifguard store serve` as root, its log in a file; stopped by its pid."""

    def __init__(self, store: str, sock: str, log: str):
        self.store, self.sock, self.log = store, sock, log
        self.logf = open(log, "w")
        self.proc = subprocess.Popen(SG + ["store", "serve", "--store", store, "--socket", sock],
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        deadline = time.monotonic() + 20
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                s.close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"stager did not come up: {open(log).read()[-1000:]}")
                time.sleep(0.05)
        self.mark()

    def mark(self):
        """Start counting from here (log lines, bytes read, CPU time)."""
        self._lines = len(self.lines_all())
        self._rchar = rchar(self.proc.pid)
        self._cpu = self.cpu()

    def cpu(self) -> float:
        """The stager's user+system CPU seconds so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def cpu_since_mark(self) -> float:
        return self.cpu() - self._cpu

    def lines_all(self) -> list[str]:
        """One entry per request the stager logged, found by pattern: its threads' log lines
        can interleave (a record and another's newline), so lines are not records."""
        with open(self.log) as f:
            return re.findall(r"sifguard-stager: uid \d+ pid \d+: \S+", f.read())

    def since_mark(self) -> tuple[collections.Counter, int]:
        """(outcomes by how: staged/waited/indexed/deduplicated/error, bytes read) since mark().
        The stager logs a request after replying to it: wait until the log stops growing."""
        lines, quiet = self.lines_all(), 0
        deadline = time.monotonic() + 5.0
        while quiet < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.lines_all()
            quiet = quiet + 1 if len(now) == len(lines) else 0
            lines = now
        c = collections.Counter()
        for ln in lines[self._lines:]:
            m = re.match(r"sifguard-stager: uid \d+ pid \d+: (\S+)", ln)
            c[m.group(1) if m else "?"] += 1
        return c, rchar(self.proc.pid) - self._rchar

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def fresh_store(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)


def objects_in(store: str) -> int:
    try:
        return sum(1 for n in os.listdir(os.path.join(store, "objects")) if n.endswith(".sif"))
    except OSError:
        return 0


# --- one concurrent batch ---------------------------------------------------------------
class Batch:
    """N processes launched back to back as nobody; what each stand-in recorded."""

    def __init__(self, d: str, label: str):
        self.out = tempfile.mkdtemp(prefix=f"out-{label}-", dir=d)
        os.chmod(self.out, 0o777)

    def run(self, argv: list[str], n: int, timeout: float = 900.0, env_extra: dict | None = None,
            argv_for=None) -> dict:
        launched = []
        procs = []
        with ShmemSampler(lambda: [p.pid for p, _ in procs if p.returncode is None]) as shm:
            t0 = time.time_ns()
            for i in range(n):
                env = dict(os.environ, SGB_OUT=self.out, SGB_TASK=str(i), **(env_extra or {}))
                env.pop("PYTHONPATH", None)
                a = argv_for(i) if argv_for else argv
                launched.append(time.time_ns())
                err = open(os.path.join(self.out, f"err-{i}"), "w+b")
                procs.append((subprocess.Popen(NOBODY + a, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                               cwd=self.out), err))
            killer = threading.Timer(timeout, lambda: [p.kill() for p, _ in procs if p.returncode is None])
            killer.start()
            errs, cpu = [], []
            for p, err in procs:
                _, status, ru = os.wait4(p.pid, 0)      # the rusage of setpriv → shim → stand-in (one pid)
                p.returncode = os.waitstatus_to_exitcode(status)
                cpu.append((ru.ru_utime + ru.ru_stime) * 1000)
                if p.returncode != 0:
                    err.seek(0)
                    errs.append(f"rc {p.returncode}: {err.read().decode(errors='replace').strip()[-300:]}")
                err.close()
            killer.cancel()
        lat, ends, ran, unreadable = [], [], [], 0
        for i in range(n):
            try:
                with open(os.path.join(self.out, str(i))) as f:
                    fields = f.read().split()
            except OSError:
                continue
            ts = int(fields[0])
            ends.append(ts)
            lat.append((ts - launched[i]) / 1e6)
            unreadable += fields[1] != "1"
            ran.append(fields[3] if len(fields) > 3 else "")
        return {"n": n, "ok": len(lat), "errors": errs, "lat_ms": lat, "cpu_ms": cpu,
                "wall_s": (max(ends) - t0) / 1e9 if ends else float("nan"),
                "shmem_mib": shm.growth_mib, "memfd_mib": shm.own_mib, "ran": ran, "unreadable": unreadable}


# --- the bench --------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.procs: list = []

    # setup -------------------------------------------------------------------------------
    def setup(self):
        a = self.args
        self.d = d = tempfile.mkdtemp(prefix="sg-many-tasks-")
        os.chmod(d, 0o755)
        self.hook_python = pick_hook_python(a.hook_python)
        compile_bytecode(ROOT)
        # CA: its URL is the counting proxy's port; the responder listens behind it
        self.proxy_port, self.resp_port = free_port(), free_port()
        ca = make_ca(d, self.proxy_port)
        self.ca = ca
        os.makedirs(f"{d}/trust", 0o755)
        shutil.copyfile(f"{ca}/root.pem", f"{d}/trust/root.pem")     # the CA dir is 0700: users need the roots
        os.chmod(f"{d}/trust/root.pem", 0o644)
        self.responder = start_responder(ca, self.resp_port)
        self.procs.append(self.responder)
        self.proxy = CountingProxy(self.proxy_port, self.resp_port)
        # stand-in runtime
        with open(f"{d}/standin.c", "w") as f:
            f.write(STANDIN_C)
        subprocess.run(["cc", "-O2", "-o", f"{d}/standin", f"{d}/standin.c"], check=True)
        os.chmod(f"{d}/standin", 0o755)
        self.standin = f"{d}/standin"
        # images
        os.makedirs(f"{d}/img", 0o755)
        self.images = {}
        for size in a.sizes:
            p = f"{d}/img/img-{human(size)}.sif"
            make_sif(p, size)
            sign(d, p)
            os.chmod(p, 0o644)
            self.images[size] = (p, os.path.getsize(p))
        # policy (root-owned, 0644), OCSP cache filled by root, audit to a root-owned log
        os.makedirs(f"{d}/ocsp", 0o755)
        os.makedirs(f"{d}/audit", 0o755)
        self.policy = f"{d}/policy.yaml"
        with open(self.policy, "w") as f:
            f.write(f"version: 1\ntrust: {{roots: [{d}/trust/root.pem]}}\n"
                    f"revocation: {{mode: enforce, cache_dir: {d}/ocsp}}\n"
                    f"cache: {{images: off}}\naudit: {{log: {d}/audit/audit.jsonl}}\n")
        os.chmod(self.policy, 0o644)
        # hooks: through the store, and the sealed in-memory copy path
        self.store = f"{d}/store"
        self.sock = f"{d}/stager.sock"
        seal = max(max(a.sizes) + 64 * MiB, 1 << 30)
        for kind, extra in (("store", ["--store", self.store, "--stager-socket", self.sock]),
                            ("memfd", ["--seal-limit", str(seal)])):
            sg("slurm", "install", "--prefix", f"{d}/hooks-{kind}", "--policy", self.policy, "--apptainer",
               self.standin, "--singularity", self.standin, "--no-spank", "--slurm-conf", f"{d}/slurm.conf",
               "--python", self.hook_python, *extra)
        self.shim = {k: f"{d}/hooks-{k}/shim/apptainer" for k in ("store", "memfd")}
        self.stager = None
        os.sync()

    def facts(self):
        d = self.d
        fs = subprocess.run(["df", "--output=fstype,target", d], capture_output=True, text=True).stdout.split()
        mem = mem_available()
        print(f"machine: nproc {os.cpu_count()}, {platform.machine()}, kernel {platform.release()}, "
              f"MemAvailable {mem / 2**30:.1f} GiB; store fs {fs[-2] if len(fs) >= 2 else '?'} "
              f"(mounted at {fs[-1] if fs else '?'}); bench dir {d}; load average {load()}")
        print(f"hooks run with {self.hook_python} as nobody (uid 65534); stager and setup as root; "
              f"images: " + ", ".join(f"{human(s)} ({n} bytes)" for s, (_, n) in self.images.items()))

    def close(self):
        if self.stager:
            self.stager.stop()
        for p in getattr(self, "node_stagers", []):
            p.stop()
        if getattr(self, "proxy", None):
            self.proxy.close()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not self.args.keep and getattr(self, "d", None):
            shutil.rmtree(self.d, ignore_errors=True)

    # part 1 ------------------------------------------------------------------------------
    def restart_stager(self, cold: bool):
        if self.stager:
            self.stager.stop()
        if cold:
            fresh_store(self.store)
        self.stager = Stager(self.store, self.sock, f"{self.d}/stager-{len(self.rows)}.log")

    def verify_baseline(self, img: str) -> float:
        """One cold `sifguard verify --policy` of the image (page cache warm, OCSP cached):
        the best of 3 fresh processes, in seconds."""
        out = []
        for _ in range(3):
            t = time.perf_counter()
            sg("verify", img, "--policy", self.policy)
            out.append(time.perf_counter() - t)
        return min(out)

    def case(self, size: int, n: int, kind: str, bare: dict | None, repeat: int = 1) -> dict:
        """`repeat` batches of n (a cold batch each on a fresh store and stager): per-task
        values pooled, wall the median batch, Shmem the worst, hashes/copies the worst batch."""
        img, nbytes = self.images[size]
        ocsp0 = self.proxy.snapshot()
        if kind == "bare":
            argv = [self.standin, "exec", img, "true"]
        else:
            argv = [self.shim["memfd" if kind == "memfd" else "store"], "exec", img, "true"]
        row = {"size": size, "n": n, "kind": kind, "ok": 0, "errors": [], "lat_ms": [], "cpu_ms": [], "ran": [],
               "walls": [], "shmem_mib": 0.0, "memfd_mib": 0.0, "unreadable": 0, "how": collections.Counter(), "hash_passes": 0,
               "copies": 0, "read_mib": 0.0, "stager_cpu_s": 0.0}
        for _ in range(repeat):
            if kind in ("cold", "warm"):
                if kind == "cold":
                    self.restart_stager(cold=True)
                    os.sync()           # no writeback of earlier cases (or the images) under this one
                self.stager.mark()
            before = objects_in(self.store)
            r = Batch(self.d, f"{kind}-{human(size)}-{n}").run(argv, n)
            for key in ("ok", "unreadable"):
                row[key] += r[key]
            for key in ("errors", "lat_ms", "cpu_ms", "ran"):
                row[key] += r[key]
            row["walls"].append(r["wall_s"])
            row["shmem_mib"] = max(row["shmem_mib"], r["shmem_mib"])
            row["memfd_mib"] = max(row["memfd_mib"], r["memfd_mib"])
            if kind in ("cold", "warm"):
                how, read = self.stager.since_mark()
                row["how"] += how
                row["hash_passes"] = max(row["hash_passes"], how.get("staged", 0) + how.get("deduplicated", 0))
                row["copies"] = max(row["copies"], objects_in(self.store) - before)
                row["read_mib"] = max(row["read_mib"], read / MiB)
                row["stager_cpu_s"] = max(row["stager_cpu_s"], self.stager.cpu_since_mark())
        row["n_total"] = n * repeat
        row["wall_s"] = statistics.median(row["walls"])
        row["ocsp"] = sum((self.proxy.snapshot() - ocsp0).values())
        if kind in ("cold", "warm"):
            row["ran_store"] = sum(1 for x in row["ran"] if x.startswith(self.store + "/objects/"))
        elif kind == "memfd":
            row["hash_passes"] = row["copies"] = n           # one sealed copy and one hash pass per task
            row["ran_store"] = sum(1 for x in row["ran"] if x.startswith("/proc/self/fd/"))
        else:
            row["hash_passes"] = row["copies"] = "-"
        row["bytes_hashed"] = row["hash_passes"] * nbytes if isinstance(row["hash_passes"], int) else 0
        if bare is not None and row["lat_ms"]:
            ov = [x - bare["lat_med"] for x in row["lat_ms"]]
            row["ov_med"], row["ov_max"] = statistics.median(ov), max(ov)
            row["cpu_ov"] = statistics.median(row["cpu_ms"]) - bare["cpu_med"]
        elif row["lat_ms"]:
            row["lat_med"], row["lat_max"] = statistics.median(row["lat_ms"]), max(row["lat_ms"])
            row["cpu_med"] = statistics.median(row["cpu_ms"])
        self.rows.append(row)
        self.print_row(row)
        return row

    @staticmethod
    def print_header():
        print(f"{'size':>5} {'N':>3} {'path':<5} {'ok':>7} {'wall s':>7} {'ovh med':>8} {'ovh max':>8} "
              f"{'cpu+':>6} {'shmem+':>7} {'memfd':>6} {'hashes':>6} {'read':>7} {'copies':>6} {'stgcpu':>6} {'ocsp':>4}  outcomes at the stager")
        print(f"{'':>5} {'':>3} {'':<5} {'':>7} {'':>7} {'ms':>8} {'ms':>8} {'ms':>6} {'MiB':>7} {'MiB':>6} {'':>6} "
              f"{'MiB':>7} {'':>6} {'s':>6}")

    @staticmethod
    def print_row(r: dict):
        ov_med = r.get("ov_med", r.get("lat_med", float("nan")))
        ov_max = r.get("ov_max", r.get("lat_max", float("nan")))
        rp = r.get("read_mib")
        cpu = r.get("cpu_ov", r.get("cpu_med", float("nan")))
        scpu = f"{r['stager_cpu_s']:.2f}" if r["kind"] in ("cold", "warm") else "-"
        print(f"{human(r['size']):>5} {r['n']:>3} {r['kind']:<5} {r['ok']:>3}/{r['n_total']:<3} {r['wall_s']:>7.3f} "
              f"{ov_med:>8.1f} {ov_max:>8.1f} {cpu:>6.1f} {r['shmem_mib']:>7.1f} {r['memfd_mib']:>6.0f} {r.get('hash_passes', '-'):>6} "
              f"{'-' if r['kind'] not in ('cold', 'warm') else f'{rp:.1f}':>7} {r.get('copies', '-'):>6} "
              f"{scpu:>6} {r['ocsp']:>4}  "
              f"{' '.join(f'{k}={v}' for k, v in sorted(r.get('how', {}).items()))}"
              + ("  (bare: latency and CPU, not overhead)" if r["kind"] == "bare" else ""), flush=True)
        for e in r["errors"][:3]:
            print(f"      task failed: {e}")
        if r["kind"] != "bare" and r["ok"] and r.get("ran_store", r["ok"]) != r["ok"]:
            print(f"      only {r['ran_store']}/{r['ok']} tasks ran the expected copy ({r['ran'][:2]})")
        if r.get("unreadable"):
            print(f"      {r['unreadable']} stand-ins could not read the image they were given")

    def part1(self):
        a = self.args
        print("\n== part 1: N concurrent tasks per image (overhead = launch→stand-in start minus the bare median "
              "at that N) ==")
        self.verify_s = {}
        for size in a.sizes:
            img, nbytes = self.images[size]
            sg("verify", img, "--policy", self.policy)         # fills the OCSP cache (root) and the page cache
            self.verify_s[size] = self.verify_baseline(img)
            print(f"\n{human(size)} image: one `sifguard verify --policy` (fresh process, page cache warm, OCSP "
                  f"cached) = {self.verify_s[size]:.3f} s")
            self.print_header()
            for n in a.tasks:
                bare = self.case(size, n, "bare", None, a.repeat)
                bare = {"lat_med": bare.get("lat_med", 0.0), "cpu_med": bare.get("cpu_med", 0.0)}
                self.case(size, n, "cold", bare, a.repeat)
                self.case(size, n, "warm", bare, a.repeat)
                if a.skip_memfd:
                    continue
                need = n * nbytes
                if need > mem_available() // 2:
                    self.notes.append(f"memfd {human(size)} x {n} skipped: {need / 2**30:.1f} GiB of sealed copies "
                                      f"> half of MemAvailable ({mem_available() / 2**30:.1f} GiB), no swap: "
                                      "it would invoke the OOM killer")
                    print(f"{human(size):>5} {n:>3} memfd skipped: needs {need / 2**30:.1f} GiB of Shmem "
                          f"(MemAvailable {mem_available() / 2**30:.1f} GiB)")
                    continue
                self.case(size, n, "memfd", bare, a.repeat if size < 256 * MiB else 1)
            self.side_check(size)
        if self.stager:
            self.stager.stop()
            self.stager = None

    def side_check(self, size: int):
        """Ask the (warm) stager ourselves: the reply's own bytes_hashed and how."""
        from sifguard.store import client
        img, _ = self.images[size]
        fd = os.open(img, os.O_RDONLY | os.O_CLOEXEC)
        try:
            rep = client.ask(self.sock, fd, {"policy": self.policy, "path": img, "context": {}}, timeout=600)
        finally:
            os.close(fd)
        print(f"      side check: asking the stager for the {human(size)} image again: how={rep.get('how')} "
              f"bytes_hashed={rep.get('bytes_hashed')} copies={rep.get('copies')} allowed={rep.get('allowed')}")

    # where the time goes ---------------------------------------------------------------
    def anatomy(self):
        """Cold: the staging pass's parts (hash only, copy only, copy+hash, ± fsync) beside
        a verify; warm: interpreter start, imports, the rest (one shim at a time, as nobody)."""
        a = self.args
        size = max(a.sizes)
        img, nbytes = self.images[size]
        print("\n== where the time goes (one at a time; best of 3) ==")
        from sifguard.store.layout import Store
        from sifguard.store.stage import Stager as StoreStager

        def best(fn, n=3):
            out = []
            for _ in range(n):
                os.sync()
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return min(out)

        def openssl():
            subprocess.run(["openssl", "dgst", "-sha256", img], check=True, capture_output=True)

        def copy(sync):
            dst = f"{self.d}/anatomy-copy"
            with open(img, "rb") as f, open(dst, "wb") as g:
                shutil.copyfileobj(f, g, MiB)
                if sync:
                    g.flush()
                    os.fsync(g.fileno())
            os.unlink(dst)

        def stage(durable):
            st = f"{self.d}/anatomy-store"
            fresh_store(st)
            fd = os.open(img, os.O_RDONLY | os.O_CLOEXEC)
            try:
                store = Store(st)
                store.init()
                r = StoreStager(store, durable=durable).stage(fd, keep=lambda found: True)
                assert r.how == "staged", r
            finally:
                os.close(fd)
            shutil.rmtree(st)
        parts = [("openssl dgst -sha256 (hash only, a peer)", best(openssl)),
                 ("sifguard verify --policy (fresh process)", self.verify_s[size]),
                 ("copy 1 MiB at a time, no fsync (write only)", best(lambda: copy(False))),
                 ("copy 1 MiB at a time + fsync", best(lambda: copy(True))),
                 ("store staging pass in-process, durable=False (copy+hash)", best(lambda: stage(False))),
                 ("store staging pass in-process, durable=True (copy+hash+fsync)", best(lambda: stage(True)))]
        print(f"   {human(size)} image, cold path parts:")
        for what, t in parts:
            print(f"     {what:<64} {t:7.3f} s  ({t / self.verify_s[size]:.2f}x verify)")
        # warm: one shim at a time
        shim = self.shim["store"]
        self.restart_stager(cold=False)
        run = lambda argv: Batch(self.d, "anatomy").run(argv, 1)  # noqa: E731
        run([shim, "exec", img, "true"])                          # warm it (decision recorded)
        cfg = os.path.join(os.path.dirname(os.path.dirname(shim)), "sifguard-slurm.json")
        paths = open(shim).read().splitlines()[1]              # the shim's own `sys.path[:0] = [...]`
        work = (f"import os, sys, time, json\n{paths}\nbase = set(sys.modules)\nc0 = time.process_time()\n"
                "from sifguard.slurm import shim\n"
                "def stop(path, argv):\n"
                "    c1 = time.process_time()\n"
                "    print(json.dumps({'cpu_ms': (c1 - c0) * 1000, 'mods': sorted(set(sys.modules) - base)}))\n"
                "    sys.stdout.flush(); os._exit(0)\n"
                f"os.execv = stop\nshim.main([{shim!r}, 'exec', {img!r}, 'true'], {cfg!r})\n")
        # the same, with every module it imports imported first: its own work alone
        work_only = (f"import os, sys, time, json, importlib\n{paths}\n"
                     "for m in json.loads(sys.argv[1]):\n"
                     "    try:\n        importlib.import_module(m)\n    except Exception:\n        pass\n"
                     "c0 = time.process_time()\nfrom sifguard.slurm import shim\n"
                     "def stop(path, argv):\n"
                     "    print((time.process_time() - c0) * 1000); sys.stdout.flush(); os._exit(0)\n"
                     f"os.execv = stop\nshim.main([{shim!r}, 'exec', {img!r}, 'true'], {cfg!r})\n")

        def as_nobody(code, *argv):
            p = subprocess.run(NOBODY + [self.hook_python, "-IS", "-c", code, *argv], capture_output=True,
                               text=True, cwd="/")
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-500:])
            return p.stdout
        floor, total, inproc, own = [], [], [], []
        for _ in range(5):
            floor.append(run([self.hook_python, "-IS", "-c", "pass"])["cpu_ms"][0])
            total.append(run([shim, "exec", img, "true"])["cpu_ms"][0])
            w = json.loads(as_nobody(work))
            inproc.append(w["cpu_ms"])
            own.append(float(as_nobody(work_only, json.dumps(w["mods"]))))
        f, t, i, o = (statistics.median(x) for x in (floor, total, inproc, own))
        print("   warm shim as nobody, CPU ms (median of 5):")
        print(f"     setpriv + interpreter start (`python -IS -c pass`)                    {f:6.1f}")
        print(f"     shim in-process, import to exec (in one process)                      {i:6.1f}")
        print(f"       of which its own work (config, argv, policy, fingerprint, lookups)  {o:6.1f}")
        print(f"       of which imports ({len(w['mods'])} modules; the difference)                     {i - o:6.1f}")
        print(f"     exec of the stand-in and the rest (total minus the above)             {t - f - i:6.1f}")
        print(f"     total (setpriv → shim → stand-in, one process's CPU)                  {t:6.1f}")
        self.stager.stop()
        self.stager = None

    # part 2 ------------------------------------------------------------------------------
    def part2(self):
        a = self.args
        k, s = a.nodes, max(1, min(a.stagers, a.nodes))
        size = max(a.sizes)
        img, nbytes = self.images[size]
        d = f"{self.d}/cluster"
        os.makedirs(d, 0o755)
        self.cl_store = store = f"{d}/shared-store"
        self.cl_ocsp = f"{d}/ocsp-shared"
        print(f"\n== part 2: shared store, {k} simulated nodes x 1 job of the {human(size)} image, {s} stager "
              f"process(es) on the one store directory (node i asks stager i mod {s}), revocation enforce, "
              f"each node its own policy copy and OCSP cache_dir, one shared_cache_dir ==")
        t = time.perf_counter()
        self.nodes = []
        for i in range(k):
            nd = f"{d}/node{i:03d}"
            os.makedirs(nd, 0o755)
            pol = f"{nd}/policy.yaml"
            with open(pol, "w") as f:
                f.write(f"version: 1\ntrust: {{roots: [{self.d}/trust/root.pem]}}\n"
                        f"revocation: {{mode: enforce, cache_dir: {nd}/ocsp, shared_cache_dir: {self.cl_ocsp}}}\n"
                        f"cache: {{images: off}}\naudit: {{log: {nd}/audit.jsonl}}\n")
            os.chmod(pol, 0o644)
            sock = f"{d}/stager{i % s:03d}.sock"
            sg("slurm", "install", "--prefix", f"{nd}/hooks", "--policy", pol, "--apptainer", self.standin,
               "--singularity", self.standin, "--no-spank", "--slurm-conf", f"{nd}/slurm.conf",
               "--python", self.hook_python, "--store", store, "--stager-socket", sock)
            self.nodes.append(nd)
        print(f"   set up {k} node installs in {time.perf_counter() - t:.1f} s")
        self.cluster = []
        for how in ("at once", "one after another"):
            self.cluster.append(self.cluster_run(how, k, s, img, nbytes, size))

    def cluster_run(self, how: str, k: int, s: int, img: str, nbytes: int, size: int) -> dict:
        d, store = f"{self.d}/cluster", self.cl_store
        fresh_store(store)                                  # cold: empty store, empty OCSP caches
        shutil.rmtree(self.cl_ocsp, ignore_errors=True)
        os.makedirs(self.cl_ocsp, 0o755)
        for nd in self.nodes:
            shutil.rmtree(f"{nd}/ocsp", ignore_errors=True)
            os.makedirs(f"{nd}/ocsp", 0o755)
        t = time.perf_counter()
        self.node_stagers = [Stager(store, f"{d}/stager{j:03d}.sock", f"{d}/stager{j:03d}-{len(self.cluster)}.log")
                             for j in range(s)]
        print(f"\n   jobs started {how} (fresh store and OCSP caches, {s} stagers started in "
              f"{time.perf_counter() - t:.1f} s):")
        ocsp0 = self.proxy.snapshot()
        argv = lambda i: [f"{self.nodes[i]}/hooks/shim/apptainer", "exec", img, "true"]  # noqa: E731
        if how == "at once":
            r = Batch(d, "cluster").run([], k, argv_for=argv)
        else:
            rs = [Batch(d, f"cluster-seq{i}").run(argv(i), 1) for i in range(k)]
            r = {"ok": sum(x["ok"] for x in rs), "errors": [e for x in rs for e in x["errors"]],
                 "lat_ms": [v for x in rs for v in x["lat_ms"]], "ran": [v for x in rs for v in x["ran"]],
                 "wall_s": sum(x["wall_s"] for x in rs), "shmem_mib": max(x["shmem_mib"] for x in rs)}
        ocsp = self.proxy.snapshot() - ocsp0
        hows, read = collections.Counter(), 0
        for st in self.node_stagers:
            h, rd = st.since_mark()
            hows += h
            read += rd
        passes = hows.get("staged", 0) + hows.get("deduplicated", 0)
        decisions = len(os.listdir(f"{store}/decisions"))
        lat = sorted(r["lat_ms"])
        ok_ran = sum(1 for x in r["ran"] if x.startswith(store + "/objects/"))
        print(f"   {r['ok']}/{k} jobs ran ({ok_ran} on the store copy); wall to the last exec {r['wall_s']:.2f} s; "
              f"launch→exec median {statistics.median(lat) if lat else float('nan'):.0f} ms, "
              f"max {max(lat) if lat else float('nan'):.0f} ms; Shmem +{r['shmem_mib']:.1f} MiB")
        for e in r["errors"][:3]:
            print(f"      job failed: {e}")
        print(f"   stager outcomes: {dict(sorted(hows.items()))}; hash passes {passes}; stagers read "
              f"{read / MiB:.1f} MiB in all; copies {objects_in(store)}; decision records {decisions}")
        per_cert = {key.split()[-1]: v for key, v in ocsp.items() if key.startswith("ocsp")}
        other = {key: v for key, v in ocsp.items() if not key.startswith("ocsp")}
        print(f"   OCSP requests the responder saw: {sum(per_cert.values())} "
              f"({', '.join(f'serial {key}: {v}' for key, v in sorted(per_cert.items())) or 'none'})"
              + (f"; other requests {dict(other)}" if other else ""))
        for st in self.node_stagers:            # a second job on every node: all warm
            st.mark()
        ocsp0 = self.proxy.snapshot()
        r2 = Batch(d, "cluster-warm").run([], k, argv_for=argv)
        hows2 = collections.Counter()
        for st in self.node_stagers:
            hows2 += st.since_mark()[0]
        lat2 = r2["lat_ms"]
        print(f"   then a second job on every node at once (warm): {r2['ok']}/{k} ran, wall {r2['wall_s']:.2f} s, "
              f"launch→exec median {statistics.median(lat2) if lat2 else float('nan'):.0f} ms; stager requests "
              f"{sum(hows2.values())}; OCSP requests {sum((self.proxy.snapshot() - ocsp0).values())}")
        for st in self.node_stagers:
            st.stop()
        self.node_stagers = []
        return {"how": how, "k": k, "stagers": s, "ok": r["ok"], "passes": passes, "copies": objects_in(store),
                "per_cert": per_cert, "wall": r["wall_s"], "size": size}

    # summary -----------------------------------------------------------------------------
    def summary(self):
        rows = [r for r in self.rows if r["kind"] != "bare"]
        print("\n== goals ==")
        store_rows = [r for r in rows if r["kind"] in ("cold", "warm")]
        if store_rows:
            cold = [r for r in store_rows if r["kind"] == "cold"]
            ok1 = all(r["hash_passes"] <= 1 and r["copies"] <= 1 for r in cold) and \
                all(r["hash_passes"] == 0 and r["copies"] == 0 for r in store_rows if r["kind"] == "warm")
            print(f"[{'met ' if ok1 else 'MISS'}] one hash pass and at most one copy per image per store whatever N: "
                  + ", ".join(f"{human(r['size'])}x{r['n']} {r['hash_passes']}/{r['copies']}" for r in cold)
                  + " (cold: passes/copies; warm: 0/0)")
            worst = max(store_rows, key=lambda r: r["shmem_mib"])
            own = max(store_rows, key=lambda r: r["memfd_mib"])
            print(f"[{'met ' if worst['shmem_mib'] <= 64 else 'MISS'}] Shmem growth <= 64 MiB whatever N and size "
                  f"(store): worst machine-wide {worst['shmem_mib']:.1f} MiB ({worst['kind']} {human(worst['size'])}"
                  f"x{worst['n']}); memfds our tasks held: worst {own['memfd_mib']:.1f} MiB"
                  + (" (so the machine-wide growth is other work on the machine)"
                     if worst["shmem_mib"] > 64 and own["memfd_mib"] <= 64 else ""))
            mem = [r for r in rows if r["kind"] == "memfd"]
            if mem:
                w = max(mem, key=lambda r: r["shmem_mib"])
                print(f"       memfd path for comparison: worst {w['shmem_mib']:.1f} MiB machine-wide, "
                      f"{w['memfd_mib']:.0f} MiB in our tasks' memfds ({human(w['size'])}x{w['n']})")
            warm = [r for r in store_rows if r["kind"] == "warm" and "ov_med" in r]
            if warm:
                meds = [r["ov_med"] for r in warm]
                okw = max(meds) <= 30
                print(f"[{'met ' if okw else 'MISS'}] warm per-task overhead <= 30 ms median, flat in size and N: "
                      + ", ".join(f"{human(r['size'])}x{r['n']} {r['ov_med']:.1f}" for r in warm)
                      + f" ms (spread {max(meds) - min(meds):.1f} ms)")
                cpus = [r["cpu_ov"] for r in warm]
                print(f"       per-task CPU over the bare stand-in (what N tasks share {os.cpu_count()} CPUs with): "
                      + ", ".join(f"{human(r['size'])}x{r['n']} {r['cpu_ov']:.1f}" for r in warm)
                      + f" ms (spread {max(cpus) - min(cpus):.1f} ms)")
            big = max(self.args.sizes)
            bigcold = [r for r in cold if r["size"] == big]
            if bigcold:
                r = max(bigcold, key=lambda r: r["n"])
                ratio = r["wall_s"] / self.verify_s[big]
                print(f"[{'met ' if ratio <= 1.3 else 'MISS'}] cold {r['n']} x {human(big)} within 1.3x one cold "
                      f"verify: {r['wall_s']:.2f} s / {self.verify_s[big]:.2f} s = {ratio:.2f}x")
        for c in getattr(self, "cluster", []):
            okh = c["passes"] == 1 and c["copies"] == 1 and c["ok"] == c["k"]
            print(f"[{'met ' if okh else 'MISS'}] shared store, jobs {c['how']}: {c['k']} nodes, one hash in total: "
                  f"{c['passes']} hash passes, {c['copies']} copies, {c['ok']}/{c['k']} jobs ran")
            worst = max(c["per_cert"].values(), default=0)
            print(f"[{'met ' if worst <= 1 else 'MISS'}] shared store, jobs {c['how']}: <= 1 OCSP request per "
                  f"certificate per validity window: {len(c['per_cert'])} certificates, at most {worst} requests "
                  "for one")
        for n in self.notes:
            print(f"note: {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="40K,1G", help="image sizes (default 40K,1G)")
    ap.add_argument("--tasks", default="1,8,32", help="concurrent tasks per case (default 1,8,32)")
    ap.add_argument("--nodes", type=int, default=100, help="simulated nodes in the shared-store part (0: skip)")
    ap.add_argument("--stagers", type=int, default=10, help="stager processes serving the shared store (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="batches per case (memfd of >= 256 MiB: one)")
    ap.add_argument("--no-anatomy", action="store_true", help="skip the where-the-time-goes breakdown")
    ap.add_argument("--skip-memfd", action="store_true", help="do not run the sealed in-memory copy comparison")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 40K,8M, tasks 1,4, 10 nodes")
    ap.add_argument("--hook-python", help="interpreter for the hooks (user nobody must be able to run it)")
    ap.add_argument("--keep", action="store_true", help="keep the bench directory")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the stager and the store are root's; tasks run as nobody)")
    if a.quick:
        a.sizes, a.tasks, a.nodes, a.stagers = "40K,8M", "1,4", min(a.nodes, 10), min(a.stagers, 3)
    a.sizes = sorted(parse_size(x) for x in a.sizes.split(","))
    a.tasks = sorted(int(x) for x in a.tasks.split(","))
    b = Bench(a)
    t0 = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        b.setup()
        b.facts()
        b.part1()
        if not a.no_anatomy:
            b.anatomy()
        if a.nodes > 0:
            b.part2()
        b.summary()
    finally:
        b.close()
    print(f"total bench time {time.perf_counter() - t0:.0f} s; load average now {load()} (other work on the "
          "machine inflates latencies; the cpu+ column is less sensitive to it)")


if __name__ == "__main__":
    main()
