"""The SPANK task hook's verdict (`sifguard-spank-check`): called by the C plugin in
the remote task context, as root, with the task's argv. It decides only when the
task is a container runtime or a SIF executed directly, so `srun /usr/bin/apptainer
exec bad.sif` cannot bypass the PATH shim. Exit 0 lets the task start, 1 fails it."""

from __future__ import annotations

import os
import pwd
import sys

from sifguard.errors import RefusedError
from sifguard.slurm import runtime_argv

SIF_MAGIC_OFFSET = 32


def looks_like_sif(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(42)[SIF_MAGIC_OFFSET:] == b"SIF_MAGIC\x00"
    except OSError:
        return False


def image_of(argv: list[str], cwd: str, flavor: str | None = None) -> tuple[str | None, str]:
    """(image to decide, why) — image None means: not a container task.
    A runtime command line that cannot be understood raises RefusedError (fail closed)."""
    if not argv:
        return None, "empty argv"
    inv = runtime_argv.parse(argv, flavor)
    if inv.tool:
        if inv.error:
            raise RefusedError(f"'{' '.join(argv[:2])} …' not understood: {inv.error}")
        if not inv.runs_image or inv.image is None:
            return None, f"'{inv.tool} {inv.command}' runs no image"
        return inv.image, ""
    exe = argv[0] if os.path.isabs(argv[0]) else os.path.join(cwd, argv[0])
    if argv[0].endswith(".sif") or looks_like_sif(exe):
        return exe, ""
    return None, "not a container task"


def main(argv: list[str]) -> int:
    """Never a traceback; anything unexpected fails the task (fail closed)."""
    try:
        return _main(argv)
    except Exception as e:  # noqa: BLE001
        print(f"sifguard: task refused: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    """argv: [--config F] --job-id ID --uid UID [--cwd DIR] -- task argv…"""
    from sifguard.slurm import config as hookconf
    opts, i = {}, 0
    while i < len(argv) and argv[i] != "--":
        opts[argv[i].lstrip("-")] = argv[i + 1]
        i += 2
    task = argv[i + 1:]
    cwd = opts.get("cwd") or os.getcwd()
    image, _ = image_of(task, cwd)
    if image is None:
        return 0
    try:
        cfg = hookconf.load(opts.get("config") or hookconf.find(sys.argv[0]))
        from sifguard.enforce.decide import Engine
        from sifguard.policy.decide import JobContext
        from sifguard.policy.loader import load_fast as load
        policy = load(cfg.policy)
        scheme = runtime_argv.scheme_of(image) if task and runtime_argv.tool_of(task[0]) else None
        if scheme is not None:
            if scheme == "instance" or scheme in policy.runtime.allow_sources:
                return 0
            print(f"sifguard: task refused: image source '{scheme}://' is not allowed ({image})", file=sys.stderr)
            return 1
        path = image if os.path.isabs(image) else os.path.join(cwd, image)
        uid = int(opts.get("uid", "-1"))
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        account = partition = None
        if opts.get("job-id"):
            from sifguard.slurm.jobinfo import parse_show_job, scontrol
            try:
                info = parse_show_job(scontrol(cfg, "show", "job", "-o", opts["job-id"]))
                account = info.get("Account") if info.get("Account") not in (None, "(null)") else None
                partition = info.get("Partition")
            except Exception:  # noqa: BLE001 - decide without them rather than fail open
                pass
        from sifguard.slurm.privileges import open_image_as

        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
        fd = open_image_as(uid, gid, path)      # read with the task user's rights, not root's
        try:
            v = Engine(policy).decide(os.path.realpath(path), JobContext(
                user=user, account=account, partition=partition, job_id=opts.get("job-id")), fd=fd)
        finally:
            os.close(fd)
    except Exception as e:  # noqa: BLE001 - fail closed
        print(f"sifguard: task refused: {image}: {e}", file=sys.stderr)
        return 1
    if not v.allowed:
        print(f"sifguard: task refused: {image}: {v.reason}", file=sys.stderr)
        return 1
    return 0
