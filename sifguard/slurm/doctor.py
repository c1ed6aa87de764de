"""`sifguard slurm doctor`: is this controller or node set up the way `slurm install` meant?

Each check returns Check records (ok | warn | fail | skip, what was seen, the fix on a
failure). Run as root for the full picture; as a user, what needs root is skipped.
Every check is bounded in time: network and child-process checks by `timeout` each.
Nothing is changed on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

from sifguard.slurm import doctor_fs as F
from sifguard.slurm import slurm_conf as SC

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
EXPIRY_WARN_DAYS = 30
INSTALLED_CONFIG = "sifguard-slurm.json"
DEFAULT_PREFIX = "/usr/libexec/sifguard"
SCRIPTS = ("sifguard-prolog-slurmctld", "sifguard-task-prolog", "sifguard-spank-check",
           "shim/apptainer", "shim/singularity")
USER_SCRIPTS = ("sifguard-task-prolog", "shim/apptainer", "shim/singularity")   # run as the job's user


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # ok | warn | fail | skip
    detail: str
    fix: str = ""


@dataclass
class Setup:
    prefix: str
    config_path: str
    slurm_conf: str
    policy_path: str
    timeout: float | None = None            # None: the policy's revocation.timeout
    cfg: object = None                      # HookConfig, when the installed configuration loads
    config_error: str = ""
    policy: object = None                   # the loaded Policy
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)


def locate(prefix: str | None = None, slurm_conf: str | None = None, policy: str | None = None,
           timeout: float | None = None) -> Setup:
    """What to examine: the installed hooks' configuration (PREFIX/sifguard-slurm.json, or
    /etc/sifguard/slurm.json, or the default prefix) and what it records, unless overridden."""
    from sifguard.slurm import config as hook_config
    if prefix:
        cands = [os.path.join(os.path.abspath(prefix), INSTALLED_CONFIG)]
    else:
        cands = [hook_config.DEFAULT, os.path.join(DEFAULT_PREFIX, INSTALLED_CONFIG)]
    cpath = next((c for c in cands if os.path.exists(c)), cands[0])
    cfg, err = None, ""
    try:
        cfg = hook_config.load(cpath)
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        err = str(e)
    if not prefix:
        prefix = os.path.dirname(cfg.shim_dir) if cfg is not None and cfg.shim_dir else os.path.dirname(cpath)
    return Setup(prefix=os.path.abspath(prefix), config_path=cpath,
                 slurm_conf=slurm_conf or (cfg.slurm_conf if cfg else "/etc/slurm/slurm.conf"),
                 policy_path=policy or (cfg.policy if cfg else ""), timeout=timeout, cfg=cfg, config_error=err)


def _problems_check(name: str, problems: list[tuple[str, str]], ok_detail: str) -> Check:
    if not problems:
        return Check(name, OK, ok_detail)
    return Check(name, FAIL, "; ".join(p for p, _ in problems), "; ".join(dict.fromkeys(f for _, f in problems)))


# --- the installation -----------------------------------------------------------------
def check_config(s: Setup) -> list[Check]:
    if s.cfg is None:
        return [Check("hooks configuration", FAIL, s.config_error or f"{s.config_path}: not found",
                      f"sifguard slurm install --prefix {s.prefix} --policy POLICY --slurm-conf {s.slurm_conf}")]
    return [_problems_check("hooks configuration", F.file_problems(s.config_path), f"{s.config_path}")]


def _p(s: Setup, rel: str) -> str:
    return os.path.join(s.prefix, rel)


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_slurm_conf(s: Setup) -> list[Check]:
    try:
        settings, files = SC.read_slurm_conf(s.slurm_conf)
    except SC.ConfError as e:
        return [Check("slurm.conf", FAIL, str(e), "point --slurm-conf at the cluster's slurm.conf (a configless "
                      "node keeps a copy in slurmd's conf-cache, e.g. /run/slurm/conf/slurm.conf)")]
    out = []
    for key, script in (("PrologSlurmctld", "sifguard-prolog-slurmctld"), ("TaskProlog", "sifguard-task-prolog")):
        want = _p(s, script)
        st = SC.last(settings, key)
        vals = [v.strip() for v in st.value.split(",")] if st else []
        if any(_same(v, want) for v in vals if v):
            out.append(Check(f"slurm.conf {key}", OK, f"{st.file}:{st.line}: {key}={st.value}"))
            continue
        seen = f"{st.file}:{st.line} sets {key}={st.value}" if st else \
            f"no {key} in {', '.join(files)}"
        fix = (f"add {want} to {key} in {st.file}:{st.line} (a comma-separated list)" if st and st.value
               else f"add the line `{key}={want}` to {s.slurm_conf}") + "; then `scontrol reconfigure`"
        out.append(Check(f"slurm.conf {key}", FAIL, seen + f" — the sifguard hook {want} is not enabled", fix))
    return out


def plugstack_path(s: Setup) -> str:
    try:
        settings, _ = SC.read_slurm_conf(s.slurm_conf)
        st = SC.last(settings, "PlugStackConfig")
    except SC.ConfError:
        st = None
    if st and st.value:
        return st.value if os.path.isabs(st.value) else os.path.join(os.path.dirname(s.slurm_conf), st.value)
    return os.path.join(os.path.dirname(s.slurm_conf), "plugstack.conf")


def _plugstack_line(s: Setup) -> str:
    return (f"required {_p(s, 'sifguard_spank.so')} helper={_p(s, 'sifguard-spank-check')} "
            f"config={_p(s, INSTALLED_CONFIG)} shim={_p(s, 'shim')}")


def check_plugstack(s: Setup) -> list[Check]:
    path = plugstack_path(s)
    line = _plugstack_line(s)
    try:
        plugins, files = SC.read_plugstack(path)
    except SC.ConfError as e:
        return [Check("plugstack.conf", FAIL, str(e), f"create {path} with the line `{line}`")]
    so = _p(s, "sifguard_spank.so")
    mine = [p for p in plugins if _same(p.path, so)]
    if not mine:
        return [Check("plugstack.conf", FAIL, f"no line loads {so} (read {', '.join(files)})",
                      f"add the line `{line}` to {path}")]
    p = mine[-1]
    args = dict(a.split("=", 1) for a in p.args if "=" in a)
    bad = []
    if p.kind != "required":
        bad.append(f"the plugin is `{p.kind}`: a task whose plugin fails to load would run unchecked")
    for k, want in (("helper", _p(s, "sifguard-spank-check")), ("config", _p(s, INSTALLED_CONFIG)),
                    ("shim", _p(s, "shim"))):
        if k not in args or not _same(args[k], want):
            bad.append(f"{k}= is {args.get(k, 'missing')!s}, not {want}")
    if bad:
        return [Check("plugstack.conf", FAIL, f"{p.file}:{p.line}: " + "; ".join(bad),
                      f"replace {p.file}:{p.line} with `{line}`")]
    return [Check("plugstack.conf", OK, f"{p.file}:{p.line}: required {p.path}")]


_DLOPEN = r"""
import ctypes, json, os, sys
try:
    lib = ctypes.CDLL(sys.argv[1], mode=os.RTLD_LAZY | os.RTLD_LOCAL)
except OSError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
out = {"symbols": [n for n in ("slurm_spank_init", "slurm_spank_task_init_privileged") if hasattr(lib, n)]}
try:
    out["version"] = ctypes.c_uint.in_dll(lib, "plugin_version").value
except ValueError:
    out["version"] = None
print(json.dumps(out))
"""


def _slurm_version(timeout: float) -> tuple[int, int] | None:
    for daemon in ("slurmd", "slurmctld", "srun"):
        exe = shutil.which(daemon) or (f"/usr/sbin/{daemon}" if os.path.exists(f"/usr/sbin/{daemon}") else None)
        if not exe:
            continue
        try:
            out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=timeout).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.search(r"(\d+)\.(\d+)\.\d+", out)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def check_spank(s: Setup) -> list[Check]:
    so = _p(s, "sifguard_spank.so")
    rebuild = f"sifguard slurm install --prefix {s.prefix} … (needs gcc and libslurm-dev)"
    if not os.path.exists(so):
        return [Check("SPANK plugin", FAIL, f"{so} does not exist", rebuild)]
    try:
        p = subprocess.run([sys.executable, "-I", "-c", _DLOPEN, so], capture_output=True, text=True,
                           timeout=_t(s))
        res = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else \
            {"error": f"the loader died ({p.returncode}): {p.stderr.strip()[-200:]}"}
    except subprocess.TimeoutExpired:
        res = {"error": f"loading it took over {_t(s):g} s"}
    except (OSError, ValueError) as e:
        res = {"error": str(e)}
    if "error" in res:
        return [Check("SPANK plugin", FAIL, f"{so} cannot be loaded: {res['error']}",
                      "install Slurm's libraries (libslurm) and rebuild: " + rebuild)]
    missing = {"slurm_spank_init", "slurm_spank_task_init_privileged"} - set(res["symbols"])
    if missing:
        return [Check("SPANK plugin", FAIL, f"{so} lacks {', '.join(sorted(missing))}", rebuild)]
    v = res.get("version")
    built = (v >> 16, (v >> 8) & 0xFF) if isinstance(v, int) else None
    running = _slurm_version(_t(s))
    if built and running and built != running:
        return [Check("SPANK plugin", FAIL, f"{so} was built for Slurm {built[0]}.{built[1]}, this host runs "
                      f"{running[0]}.{running[1]}: slurmstepd will refuse it", "rebuild: " + rebuild)]
    ver = f", built for Slurm {built[0]:02d}.{built[1]:02d}" if built else ""
    return [Check("SPANK plugin", OK, f"{so} loads, has the SPANK entry points{ver}")]


def check_hook_files(s: Setup) -> list[Check]:
    out = []
    for rel in SCRIPTS + ("sifguard_spank.so",):
        path = _p(s, rel)
        out.append(_problems_check(f"hook {rel}", F.file_problems(path), "root's alone"))
    return out


def _interpreter(script: str) -> tuple[str, list[str]]:
    """(the interpreter the kernel runs for `script`, resolved through PATH for env), its args."""
    words = F.shebang(script)
    if not words:
        return "", []
    exe, args = words[0], words[1:]
    if os.path.basename(exe) == "env" and args:
        found = shutil.which(args[0])
        return (found or args[0]), args[1:]
    return exe, args


def check_interpreters(s: Setup) -> list[Check]:
    out, seen = [], set()
    for rel in SCRIPTS:
        exe, _ = _interpreter(_p(s, rel))
        if not exe or exe in seen:
            continue
        seen.add(exe)
        out.append(_problems_check(f"interpreter {exe}", F.file_problems(exe, follow=True, want_exec=True),
                                   f"root's alone (-> {os.path.realpath(exe)})"))
    paths = []
    for rel in SCRIPTS:
        for d in F.hook_sys_path(_p(s, rel)):
            if d not in paths and os.path.isdir(d):
                paths.append(d)
    problems = []
    for d in paths:
        problems += [p for p in F.ancestor_problems(os.path.join(d, "x")) if p not in problems]
        pkg = os.path.join(d, "sifguard")
        if os.path.isdir(pkg):
            problems += [p for p in F.tree_problems(pkg) if p not in problems]
    if paths:
        out.append(_problems_check("hook imports", problems, ", ".join(paths)))
    return out


def check_runtimes(s: Setup) -> list[Check]:
    """The real runtimes the shim execs (as the job's user) and the SPANK hook compares with."""
    if s.cfg is None:
        return []
    out = []
    for exe in dict.fromkeys((s.cfg.apptainer, s.cfg.singularity)):
        if not exe:
            continue
        if not os.path.lexists(exe):
            out.append(Check(f"runtime {exe}", SKIP, "not on this host (needed on compute nodes only)"))
            continue
        out.append(_problems_check(f"runtime {exe}", F.file_problems(exe, follow=True, want_exec=True),
                                   f"root's alone (-> {os.path.realpath(exe)})"))
    return out


def check_user_run(s: Setup) -> list[Check]:
    """The task prolog and the shim run as the job's user: the interpreter must start, and
    sifguard with its dependencies import, as an unprivileged user (nobody)."""
    script = _p(s, "shim/apptainer")
    exe, args = _interpreter(script)
    if not exe:
        return [Check("hooks run as a job user", FAIL, f"{script}: no interpreter line",
                      f"sifguard slurm install --prefix {s.prefix} …")]
    paths = F.hook_sys_path(script)
    code = (f"import sys; sys.path[:0] = {paths!r}; import sifguard.slurm.shim, cryptography, yaml, requests")
    kw = {"user": F.NOBODY, "group": F.NOBODY, "extra_groups": []} if s.is_root else {}
    who = "nobody" if s.is_root else f"uid {os.getuid()}"
    try:
        p = subprocess.run([exe, *args, "-c", code], capture_output=True, text=True, timeout=max(_t(s), 10.0),
                           cwd="/", env={"PATH": "/usr/bin:/bin"}, **kw)
    except subprocess.TimeoutExpired:
        return [Check("hooks run as a job user", FAIL, f"{exe} did not finish importing sifguard in time", "")]
    except OSError as e:
        return [Check("hooks run as a job user", FAIL, f"{exe} cannot be started as {who}: {e.strerror or e}",
                      f"install sifguard under a Python every user can run (e.g. a venv in /opt), then "
                      f"sifguard slurm install --prefix {s.prefix} --python /opt/…/bin/python …")]
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["exit " + str(p.returncode)])[-1]
        return [Check("hooks run as a job user", FAIL, f"{exe} as {who}: {last}",
                      "install sifguard and its dependencies where every user can read them (not under a 0700 "
                      f"home), e.g. a venv in /opt, and re-run sifguard slurm install --python …")]
    return [Check("hooks run as a job user", OK, f"{exe} imports sifguard as {who}")]


# --- the policy and its trust ---------------------------------------------------------
def check_policy(s: Setup) -> list[Check]:
    from sifguard.policy import loader
    if not s.policy_path:
        return [Check("policy", SKIP, "no policy given and no installed configuration names one")]
    try:
        s.policy = loader.load(s.policy_path)
    except Exception as e:  # noqa: BLE001 - reported
        return [Check("policy", FAIL, str(e), f"fix the policy, check with `sifguard policy check {s.policy_path}`")]
    out = [_problems_check("policy", F.file_problems(s.policy_path, follow=True),
                           f"{s.policy_path} loads ({len(s.policy.rules)} rules)")]
    snap = s.policy_path + loader.COMPILED_SUFFIX
    if os.path.exists(snap):
        try:
            st, sst = os.stat(s.policy_path), os.stat(snap)
            with open(snap, encoding="utf-8") as f:
                d = json.load(f)
            if sst.st_uid not in (0, st.st_uid) or sst.st_mode & 0o022:
                out.append(Check("policy snapshot", FAIL, f"{snap} is not its owner's alone: the hooks ignore it",
                                 f"rm {snap} (a root hook writes a fresh one)"))
            elif d.get("compiled_version") != loader.COMPILED_VERSION or d.get("source") != loader._stat_key(st):
                out.append(Check("policy snapshot", WARN, f"{snap} is stale: the next root hook rewrites it; "
                                 "until then every hook parses the YAML"))
            else:
                loader._from_dict(d["policy"])
                out.append(Check("policy snapshot", OK, f"{snap} is current and valid"))
        except Exception as e:  # noqa: BLE001 - a snapshot the hooks would also ignore
            out.append(Check("policy snapshot", WARN, f"{snap} is unusable ({type(e).__name__}: {e}); the hooks "
                             "parse the YAML instead", f"rm {snap}"))
    return out


def _load_certs(path: str):
    from cryptography import x509
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = [x509.load_der_x509_certificate(data)]
    return certs


def trust_files(s: Setup) -> list[tuple[str, str]]:
    pol = s.policy
    if pol is None:
        return []
    return [("trust root", p) for p in pol.roots] + [("intermediate", p) for p in pol.intermediates] + \
        [("TSA root", p) for p in pol.tsa_roots]


def check_trust(s: Setup, now: dt.datetime | None = None) -> list[Check]:
    files = trust_files(s)
    if not files:
        return [Check("trust roots", SKIP, "no policy loaded")] if s.policy is None else []
    now = now or dt.datetime.now(dt.timezone.utc)
    probes = [("read", s.policy_path)] + [("read", p) for _, p in files]
    access = F.as_user(probes, _t(s)) if s.is_root else F.self_access(probes)
    who = "nobody" if s.is_root else f"uid {os.getuid()}"
    out = []
    err = access.get("read:" + s.policy_path, "")
    if err:
        out.append(Check("policy readable by users", FAIL, f"{who} cannot read {s.policy_path} ({err}): the shim, "
                         "running as the job's user, refuses every container",
                         f"chmod a+r {s.policy_path} and a+x on the directories above it"))
    else:
        out.append(Check("policy readable by users", OK, f"{who} can read {s.policy_path}"))
    for kind, path in files:
        name = f"{kind} {path}"
        problems = F.file_problems(path, follow=True)
        if problems:
            out.append(_problems_check(name, problems, ""))
            continue
        err = access.get("read:" + path, "")
        if err:
            out.append(Check(name, FAIL, f"{who} cannot read it ({err}): the shim runs as the job's user and "
                             "refuses every container", f"chmod a+r {path} and a+x on the directories above it"))
            continue
        try:
            certs = _load_certs(path)
        except OSError as e:
            out.append(Check(name, FAIL, f"cannot read it{' as root' if s.is_root else ''}: {e.strerror}",
                             f"make {path} readable (root-squashed NFS? keep trust files on local disk)"))
            continue
        except ValueError as e:
            out.append(Check(name, FAIL, f"not a certificate file: {e}",
                             f"replace {path} with the PEM certificate(s)"))
            continue
        worst, notes, fixes = OK, [], []
        for c in certs:
            cn = c.subject.rfc4514_string()
            left = c.not_valid_after_utc - now
            if c.not_valid_before_utc > now:
                worst = FAIL
                notes.append(f"{cn} is not valid before {c.not_valid_before_utc:%Y-%m-%d}")
                fixes.append(f"check the clock, or replace {path}")
            elif left.total_seconds() <= 0:
                worst = FAIL
                notes.append(f"{cn} EXPIRED {c.not_valid_after_utc:%Y-%m-%d}")
                fixes.append(f"put the renewed certificate in {path} (images signed under it are refused)")
            elif left < dt.timedelta(days=EXPIRY_WARN_DAYS):
                worst = worst if worst == FAIL else WARN
                notes.append(f"{cn} expires in {left.days} days ({c.not_valid_after_utc:%Y-%m-%d})")
            else:
                notes.append(f"{cn} until {c.not_valid_after_utc:%Y-%m-%d}")
        out.append(Check(name, worst, "; ".join(notes), "; ".join(dict.fromkeys(fixes))))
    return out


def check_revocation(s: Setup) -> list[Check]:
    if s.policy is None:
        return []
    from sifguard.ocsp.client import Checker
    from sifguard.slurm import doctor_net as N
    certs = []
    for _, path in trust_files(s):
        try:
            certs += _load_certs(path)
        except (OSError, ValueError):
            pass
    checker = Checker(s.policy.revocation)
    probes = N.probes(checker, certs)
    if not probes:
        return [Check("revocation endpoints", SKIP, "the trust files name no OCSP/CRL endpoint and the policy no "
                      "responder override (list the issuing CA under trust.intermediates to have it probed)")]
    out = []
    for p in probes:
        ok, detail = N.run_probe(checker, p, _t(s))
        fix = "" if ok else (f"start or repair the responder at {p.url} (e.g. `sifguard ca serve`), or fix the "
                             f"policy's revocation.responders; within {_t(s):g} s it must answer, or every "
                             f"decision needing it refuses (mode {s.policy.revocation.mode})")
        out.append(Check(f"{p.kind.upper()} {p.url}", OK if ok else FAIL, f"{p.label}: {detail}", fix))
    return out


# --- the store, the audit log, the caches ---------------------------------------------
def check_store(s: Setup) -> list[Check]:
    cfg = s.cfg
    if cfg is None or not cfg.store:
        return [Check("image store", SKIP, "no store configured (tasks use sealed in-memory copies)")]
    from sifguard.store.layout import Store, StoreError
    out = []
    try:
        Store(cfg.store).check_safe()
        out.append(Check("image store", OK, f"{cfg.store} is root's alone"))
    except StoreError as e:
        text = str(e)
        m = re.search(r"\(fix: (.*)\)\s*$", text)
        fix = m.group(1) if m else f"make {cfg.store} and the directories above it root's alone (chmod go-w)"
        out.append(Check("image store", FAIL, text[:m.start()].strip() if m else text, fix))
    if not cfg.stager_socket:
        out.append(Check("stager", SKIP, "no stager socket configured"))
        return out
    from sifguard.slurm import doctor_net as N
    ok, detail = N.ping_stager(cfg.stager_socket, _t(s))
    out.append(Check("stager", OK if ok else FAIL, detail, "" if ok else
                     f"start it: systemctl start sifguard-stager.socket, or `sifguard store serve --store {cfg.store} "
                     f"--socket {cfg.stager_socket}` as root"))
    return out


def _dir_check(name: str, d: str, what: str) -> Check:
    probe = d
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    problems = F.ancestor_problems(os.path.join(probe, "x"))
    if problems:
        return _problems_check(name, problems, "")
    if probe != d:
        return Check(name, OK, f"{d} does not exist yet; {what} creates it under {probe}")
    return Check(name, OK, f"{d} is root's alone")


def check_audit(s: Setup) -> list[Check]:
    pol = s.policy
    if pol is None:
        return []
    if not pol.audit_log:
        return [Check("audit log", WARN, "the policy sets no audit.log: decisions are recorded nowhere",
                      "set audit: {log: /var/log/sifguard/audit.jsonl} in the policy")]
    d = os.path.dirname(pol.audit_log)
    c = _dir_check("audit log", d, "the first root hook")
    if c.status != OK:
        return [Check("audit log", FAIL, c.detail + ": root hooks will not write there (records go to syslog)",
                      c.fix)]
    if os.path.lexists(pol.audit_log):
        problems = F.file_problems(pol.audit_log)
        if problems:
            return [_problems_check("audit log", problems, "")]
    if not s.is_root:
        return [Check("audit log", SKIP, f"{pol.audit_log}: whether root can write it needs root")]
    if os.path.isdir(d) and not os.access(d, os.W_OK):
        return [Check("audit log", FAIL, f"{d} is not writable (read-only file system?)", f"make {d} writable by root")]
    return [Check("audit log", OK, f"{pol.audit_log} ({c.detail})")]


def check_caches(s: Setup) -> list[Check]:
    pol = s.policy
    if pol is None:
        return []
    out = []
    for name, d in (("image cache", pol.image_cache), ("revocation cache", pol.revocation.cache_dir)):
        if not d:
            out.append(Check(name, SKIP, "not configured"))
            continue
        c = _dir_check(name, d, "the first root hook")
        if c.status == OK and os.path.isdir(d):
            st = os.stat(d)
            if st.st_uid != 0 or st.st_mode & 0o022:
                c = Check(name, FAIL, f"{d} is owned by uid {st.st_uid}, mode {st.st_mode & 0o7777:o}: the hooks "
                          "ignore it (every job step re-hashes / re-asks)", f"chown root:root {d}; chmod 0755 {d}")
        out.append(c if c.status == OK else Check(name, FAIL, c.detail + ": the hooks will not use it", c.fix))
    return out


def _t(s: Setup) -> float:
    if s.timeout:
        return s.timeout
    return float(s.policy.revocation.timeout) if s.policy is not None else 2.0


STEPS = (check_config, check_policy, check_slurm_conf, check_plugstack, check_spank, check_hook_files,
         check_interpreters, check_runtimes, check_user_run, check_trust, check_store, check_audit, check_caches,
         check_revocation)


def run(s: Setup) -> list[Check]:
    """Every check in order (the forks before any network thread starts). A check that
    breaks is itself a failure, never a traceback."""
    out: list[Check] = []
    for step in STEPS:
        try:
            out += step(s)
        except Exception as e:  # noqa: BLE001 - the doctor reports, it does not crash
            out.append(Check(step.__name__.removeprefix("check_"), FAIL, f"the check itself failed: "
                             f"{type(e).__name__}: {e}", ""))
    return out


SYMBOL = {OK: "✔", FAIL: "✘", SKIP: "–", WARN: "!"}


def render(checks: list[Check]) -> str:
    width = min(48, max((len(c.name) for c in checks), default=10))
    lines = []
    for c in checks:
        lines.append(f"{SYMBOL[c.status]} {c.name:<{width}}  {c.detail}")
        if c.status == FAIL and c.fix:
            lines.append(f"  {'':<{width}}  fix: {c.fix}")
    fails = sum(c.status == FAIL for c in checks)
    lines.append(f"{len(checks)} checks: {fails} failed, {sum(c.status == WARN for c in checks)} warnings, "
                 f"{sum(c.status == SKIP for c in checks)} skipped")
    return "\n".join(lines)


def as_json(s: Setup, checks: list[Check]) -> dict:
    return {"ok": not any(c.status == FAIL for c in checks),
            "setup": {"prefix": s.prefix, "config": s.config_path, "slurm_conf": s.slurm_conf,
                      "policy": s.policy_path, "timeout": _t(s), "as_root": s.is_root},
            "checks": [asdict(c) for c in checks]}
