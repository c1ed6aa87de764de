"""The SPANK task hook's verdict (`sifguard-spank-check`), called by the C plugin in the
remote task context, as root, with the task's argv, its job id, uid and gid (SPANK
items: Slurm's word, not the user's) and the task's PATH. Exit 0 lets the task start,
1 fails it.

What will the task exec? A bare name resolves through PATH, which the TaskProlog
starts with sifguard's shim directory, so `srun apptainer …` reaches the shim (which
verifies and pins the image); a path that resolves into the shim directory likewise.
The runtime called by any other path, or a SIF executed directly, is *direct*: the
image would be checked here and opened again later by the runtime, a race a job can
win, so the site policy's `runtime.direct` decides — `refuse` (default) or `check`
(verify through the gate, accepting that race). Files are looked at only as the job's
user, non-blocking, and only when they are regular files.
"""

from __future__ import annotations

import os
import stat
import sys

from sifguard.errors import BadInputError
from sifguard.slurm import runtime_argv
from sifguard.slurm.gate import in_shim_dir, reaches_runtime_directly

SIF_MAGIC = b"SIF_MAGIC\x00"


def _fail(msg: str) -> int:
    print(f"sifguard: task refused: {msg}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """Never a traceback; anything unexpected fails the task (fail closed)."""
    try:
        return _main(argv)
    except Exception as e:  # noqa: BLE001
        return _fail(f"{type(e).__name__}: {e}")


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """`[--opt VALUE]… -- task argv…` as the C plugin passes it."""
    opts, i = {}, 0
    while i < len(argv) and argv[i] != "--":
        if not argv[i].startswith("--") or i + 1 >= len(argv):
            raise BadInputError(f"malformed helper arguments near {argv[i]!r}")
        opts[argv[i][2:]] = argv[i + 1]
        i += 2
    if i >= len(argv):
        raise BadInputError("no task argv after --")
    return opts, argv[i + 1:]


def resolve_program(arg0: str, cwd: str, path_env: str, shim_dir: str) -> str | None:
    """The file the task will exec (slurmstepd's PATH search after the TaskProlog)."""
    if "/" in arg0:
        return arg0 if os.path.isabs(arg0) else os.path.join(cwd, arg0)
    dirs = ([shim_dir] if shim_dir else []) + path_env.split(":")
    for d in dirs:
        d = d or "."
        cand = os.path.join(d if os.path.isabs(d) else os.path.join(cwd, d), arg0)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(cand, os.X_OK, effective_ids=True):
            return cand
    return None


def is_sif(path: str) -> bool:
    """SIF magic, read non-blocking and only from a regular file (the caller runs as the user)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, 42, 0)[32:] == SIF_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def classify(task: list[str], cwd: str, path_env: str, cfg) -> tuple[str, str | None]:
    """('shim' | 'runtime' | 'sif' | 'other', the program path)."""
    prog = resolve_program(task[0], cwd, path_env, cfg.shim_dir)
    if prog is None:
        return "other", None
    real = os.path.realpath(prog)
    if in_shim_dir(prog, cfg.shim_dir):
        return "shim", real
    runtimes = {os.path.realpath(p) for p in (cfg.apptainer, cfg.singularity) if p}
    if real in runtimes or os.path.basename(real) in runtime_argv.TOOLS \
            or os.path.basename(prog) in runtime_argv.TOOLS:
        return "runtime", real
    if is_sif(prog):
        return "sif", prog
    if any(t in w for w in task[1:] for t in ("apptainer", "singularity", ".sif")):
        # a wrapper (env, nice, timeout, …) may exec the runtime: read the argv as the
        # prolog reads a command line, with its wrapper tables
        import shlex
        from sifguard.slurm.script_scan import scan
        for f in scan(shlex.join(task), {"PATH": path_env}, cwd, env_complete=False).found:
            if f.tool and reaches_runtime_directly(f, cfg.shim_dir):
                return ("sif" if f.tool == "sif" else "runtime"), f.program or real
    return "other", real


def _main(argv: list[str]) -> int:
    from sifguard.slurm import config as hookconf
    from sifguard.slurm.privileges import as_user
    opts, task = parse_args(argv)
    if not task:
        return 0
    cfg = hookconf.load(opts.get("config") or hookconf.find(sys.argv[0]))
    uid = int(opts["uid"])
    gid = int(opts.get("gid", "-1"))
    if gid < 0:
        import pwd
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            return _fail(f"uid {uid} has no passwd entry")
    cwd = opts.get("cwd") or "/"
    with as_user(uid, gid):
        kind, prog = classify(task, cwd, opts.get("path", "/usr/bin:/bin"), cfg)
    if kind in ("shim", "other"):
        return 0                       # not a container, or the shim will decide and pin
    from sifguard.policy.loader import load_fast
    from sifguard.slurm import context
    from sifguard.slurm.gate import Gate
    policy = load_fast(cfg.policy)
    job_id = opts.get("job-id", "")
    gate = Gate(policy, "spank", as_user=(uid, gid), audit_extra={"job": job_id})
    ctx = context.for_job(cfg, policy, job_id, uid, gid)
    what = f"{task[0]} runs the container runtime directly" if kind == "runtime" else \
        f"{task[0]} is a SIF image executed directly"
    adm = gate.refuse_direct(what, ctx, program=prog, argv=task)
    if adm is not None:
        return _fail(adm.message)
    if kind == "sif":
        adm = gate.admit_image(prog, ctx, cwd, program=prog)
    else:
        tool = "singularity" if os.path.basename(task[0]) == "singularity" else "apptainer"
        inv = runtime_argv.parse([tool] + task[1:], flavor=cfg.flavor(tool), env=None)
        adm = gate.admit(inv, ctx, cwd, program=prog, argv=task)
    return 0 if adm.allowed else _fail(adm.message)
