"""The doctor's checks of the installation: the hooks' files and configuration, their
interpreter and imports, the real runtimes, and the Slurm lines that enable them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from sifguard.slurm import slurm_conf as SC
from sifguard.slurm import doctor_fs as F
from sifguard.slurm.doctor import FAIL, INSTALLED_CONFIG, OK, SCRIPTS, SKIP, WARN, Check, Setup
from sifguard.slurm.doctor import problems_check as _problems_check
from sifguard.slurm.doctor import t as _t


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
        wrapper = next((v for v in vals if v and _mentions(v, want)), None)
        if wrapper:
            out.append(Check(f"slurm.conf {key}", WARN, f"{st.file}:{st.line}: {key}={st.value}; {wrapper} "
                             f"mentions {want} (whether it runs it, and passes its output on, is not verified)"))
            continue
        seen = f"{st.file}:{st.line} sets {key}={st.value}" if st else \
            f"no {key} in {', '.join(files)}"
        if not (st and st.value):
            fix = f"add the line `{key}={want}` to {s.slurm_conf}"
        elif key == "TaskProlog":       # one program: a site task prolog must call sifguard's (its output counts)
            fix = (f"set {key}={want} in {st.file}:{st.line}, or have the site's task prolog {st.value} also run "
                   f"{want} (its `export PATH=…` output must reach Slurm)")
        else:
            fix = f"add {want} to {key} in {st.file}:{st.line} (a comma-separated list)"
        fix += "; then `scontrol reconfigure`"
        out.append(Check(f"slurm.conf {key}", FAIL, seen + f" — the sifguard hook {want} is not enabled", fix))
    return out


def check_live_config(s: Setup) -> list[Check]:
    """What the running slurmctld uses (`scontrol show config`, bounded): a slurm.conf edited
    but not reconfigured leaves the hooks off however right the file looks."""
    exe = shutil.which("scontrol") or (s.cfg.bin_dir + "/scontrol" if s.cfg is not None else "")
    if not exe or not os.path.exists(exe):
        return [Check("running slurmctld", SKIP, "no scontrol here")]
    if not os.path.isfile(s.slurm_conf):
        return [Check("running slurmctld", SKIP, f"{s.slurm_conf} is not here to reach it with")]
    env = {"PATH": "/usr/bin:/bin", "SLURM_CONF": s.slurm_conf}
    try:
        p = subprocess.run([exe, "show", "config"], capture_output=True, text=True, timeout=_t(s), env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [Check("running slurmctld", SKIP, f"scontrol did not answer within {_t(s):g} s")]
    except OSError as e:
        return [Check("running slurmctld", SKIP, f"scontrol: {e.strerror or e}")]
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return [Check("running slurmctld", SKIP, f"not reachable from here ({last[:200]})")]
    live = {}
    for line in p.stdout.splitlines():
        k, eq, v = line.partition("=")
        if eq:
            live[k.strip().lower()] = v.strip()
    wrong = []
    for key, script in (("PrologSlurmctld", "sifguard-prolog-slurmctld"), ("TaskProlog", "sifguard-task-prolog")):
        want = _p(s, script)
        vals = [v.strip() for v in live.get(key.lower(), "").split(",")]
        if not any(v and (_same(v, want) or _mentions(v, want)) for v in vals):
            wrong.append(f"{key} = {live.get(key.lower(), '(none)')}")
    ps = live.get("plugstackconfig", "")
    if ps and not _same(ps, plugstack_path(s)):
        wrong.append(f"PlugStackConfig = {ps}, not {plugstack_path(s)}")
    if wrong:
        return [Check("running slurmctld", FAIL, "the running controller has " + "; ".join(wrong),
                      "scontrol reconfigure (or restart slurmctld and slurmd) after editing slurm.conf")]
    return [Check("running slurmctld", OK, "uses the sifguard hooks (scontrol show config)")]


def _mentions(script: str, path: str) -> bool:
    """Whether a site's own hook script names `path` (a wrapper that may call sifguard's)."""
    try:
        with open(script, "rb") as f:
            return path.encode() in f.read(1 << 16)
    except OSError:
        return False


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
    unsafe = F.file_problems(so)
    if unsafe:      # loading runs its constructors: never one someone else could have written
        return [Check("SPANK plugin", FAIL, f"{so} not loaded: {unsafe[0][0]}", unsafe[0][1])]
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


def check_cli_filter(s: Setup) -> list[Check]:
    """Submit-time feedback (optional): CliFilterPlugins=cli_filter/lua with the cli_filter.lua
    next to slurm.conf calling the installed precheck. The script runs inside every user's
    sbatch/srun, so it must be root's alone like a hook."""
    name = "submit-time feedback"
    installed, precheck = _p(s, "cli_filter.lua"), _p(s, "sifguard-precheck")
    try:
        settings, _ = SC.read_slurm_conf(s.slurm_conf)
    except (SC.ConfError, OSError):
        return []                      # the slurm.conf check says why
    st = SC.last(settings, "CliFilterPlugins")
    plugins = [p.strip() for p in (st.value if st else "").split(",") if p.strip()]
    lua = os.path.join(os.path.dirname(os.path.abspath(s.slurm_conf)), "cli_filter.lua")
    install = f"install -m 0644 {installed} {lua}"
    if not any(p in ("cli_filter/lua", "lua") for p in plugins):
        return [Check(name, SKIP, f"not enabled (optional): add CliFilterPlugins=cli_filter/lua to slurm.conf and "
                                  f"`{install}`")]
    if not os.path.exists(lua):
        return [Check(name, FAIL, f"CliFilterPlugins has cli_filter/lua but {lua} does not exist", install)]
    problems = F.file_problems(lua)
    if problems:
        return [_problems_check(name, problems, "")]
    try:
        with open(lua, encoding="utf-8", errors="replace") as f:
            calls = precheck in f.read()
    except OSError as e:
        return [Check(name, FAIL, f"{lua}: {e.strerror}", install)]
    if not calls:
        return [Check(name, FAIL, f"{lua} does not call {precheck}",
                      f"{install} (or merge its slurm_cli_pre_submit into the site's script)")]
    pre = F.file_problems(precheck)
    if pre:
        return [_problems_check(name, pre, "")]
    return [Check(name, OK, f"{st.file}:{st.line}: cli_filter/lua; {lua} calls {precheck}")]


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
                      "home), e.g. a venv in /opt, and re-run sifguard slurm install --python …")]
    return [Check("hooks run as a job user", OK, f"{exe} imports sifguard as {who}")]


