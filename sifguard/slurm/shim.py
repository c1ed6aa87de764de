"""The `apptainer` / `singularity` shim put first on a task's PATH by the TaskProlog.

It parses the real command-line grammar, and for a command that runs an image:
copies the image into a sealed memfd (F_SEAL_WRITE|SHRINK|GROW: no one, not even its
owner, can change it afterwards), verifies *that copy* under the site policy for this
job, and execs the real runtime with the image operand replaced by
`/proc/self/fd/N` of the sealed copy — so swapping or rewriting the file after the
check changes nothing that runs. Images too large for memory are copied into a
private 0700 directory instead (still verified after the copy). Commands that run
no image pass through; build/pull/push only when the policy allows them.
"""

from __future__ import annotations

import fcntl
import os
import sys

from sifguard.slurm import runtime_argv

MEMFD_LIMIT = 8 << 30


def _fail(msg: str) -> int:
    print(f"sifguard: {msg}", file=sys.stderr)
    return 1


def sealed_copy(path: str, copy_dir: str) -> int:
    """A read-only fd holding an immutable copy of `path` (inheritable)."""
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        if size <= MEMFD_LIMIT and hasattr(os, "memfd_create"):
            fd = os.memfd_create("sifguard-verified.sif", os.MFD_ALLOW_SEALING)
            sealed = True
        else:
            d = os.path.join(copy_dir, f"sifguard-{os.getuid()}")
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o400)
            sealed = False
        off = 0
        while off < size:
            n = os.copy_file_range(src, fd, size - off, off, off) if not sealed else \
                os.sendfile(fd, src, off, size - off)
            if n <= 0:
                raise OSError("short copy")
            off += n
        if sealed:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                        | fcntl.F_SEAL_SEAL)
        ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        os.close(fd)
        os.set_inheritable(ro, True)
        return ro
    finally:
        os.close(src)


def main(argv: list[str], cfg_path: str | None = None) -> int:
    """Never a traceback: anything unexpected refuses in one line (fail closed)."""
    try:
        return _main(argv, cfg_path)
    except Exception as e:  # noqa: BLE001
        return _fail(f"refused: {type(e).__name__}: {e}")


def _main(argv: list[str], cfg_path: str | None = None) -> int:
    from sifguard.slurm import config as hookconf
    tool = os.path.basename(argv[0])
    try:
        cfg = hookconf.load(cfg_path or hookconf.find(argv[0]))
    except Exception as e:  # noqa: BLE001
        return _fail(str(e))
    real = cfg.apptainer if tool == "apptainer" else cfg.singularity
    inv = runtime_argv.parse([tool] + argv[1:], getattr(cfg, "flavor", None), os.environ)
    args = list(argv[1:])
    if inv.error:
        return _fail(f"refused: {tool} command line not understood: {inv.error}")
    if not inv.runs_image:
        if runtime_argv.is_build_or_pull(inv):
            from sifguard.policy.loader import load_fast as load
            rt = load(cfg.policy).runtime
            if not (rt.allow_build if inv.command == "build" else rt.allow_pull):
                return _fail(f"'{tool} {inv.command}' is not allowed on this cluster by the site policy")
        return _exec(real, args)
    scheme = inv.scheme
    from sifguard.policy.loader import load_fast as load
    policy = load(cfg.policy)
    if scheme == "instance":
        return _exec(real, args)            # a running instance was checked when it started
    if scheme is not None:
        if scheme not in policy.runtime.allow_sources:
            return _fail(f"refused: image source '{scheme}://' is not allowed by the site policy ({inv.image})")
        return _exec(real, args)
    try:
        fd = sealed_copy(inv.image, cfg.copy_dir)
    except OSError as e:
        return _fail(f"refused: cannot read image {inv.image}: {e.strerror or e}")
    from sifguard.enforce.decide import Engine
    try:
        v = Engine(policy).decide(os.path.realpath(inv.image), _context(), fd=fd, cache=False)
    except Exception as e:  # noqa: BLE001 - fail closed with one line
        return _fail(f"refused: {inv.image}: {e}")
    if not v.allowed:
        return _fail(f"refused: {inv.image}: {v.reason}")
    os.lseek(fd, 0, os.SEEK_SET)
    args[inv.image_index - 1] = f"/proc/self/fd/{fd}"
    return _exec(real, args)


def _context():
    """The job context as the shim sees it (advisory: the controller prolog decided with
    Slurm's own record of the job; these variables only narrow which rule applies)."""
    import grp
    import pwd
    from sifguard.policy.decide import JobContext
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    try:
        group = grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        group = str(os.getgid())
    return JobContext(user=user, group=group, account=os.environ.get("SLURM_JOB_ACCOUNT"),
                      partition=os.environ.get("SLURM_JOB_PARTITION"), job_id=os.environ.get("SLURM_JOB_ID"))


def _exec(real: str, args: list[str]) -> int:
    try:
        os.execv(real, [real] + args)
    except OSError as e:
        return _fail(f"cannot run {real}: {e.strerror}")
    return 1  # not reached
