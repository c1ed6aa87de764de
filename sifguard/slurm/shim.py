"""The `apptainer` / `singularity` shim put first on a task's PATH by the TaskProlog.

Parses the command line with the runtime's own flag table (refusing what it cannot
parse), takes the job context from Slurm rather than the task environment, and asks
the gate: the image is opened once, its rule chosen from the path of what was opened,
its bytes pinned — in the verified image store (the runtime is given the store's
immutable copy, held in use by an inherited read lock) or, where no store serves, in a
sealed in-memory copy (`/proc/self/fd/N`) — and verified there. Swapping or rewriting
the file after the check changes nothing that runs. Commands that run no image pass
through; build/pull/push only when the policy allows them.
"""

from __future__ import annotations

import os
import sys

from sifguard.slurm import runtime_argv


def _fail(msg: str) -> int:
    print(f"sifguard: {msg}", file=sys.stderr)
    return 1


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
    args = list(argv[1:])
    inv = runtime_argv.parse([tool] + args, flavor=cfg.flavor(tool), env=os.environ)
    if not inv.error and not inv.runs_image and not runtime_argv.is_build_or_pull(inv):
        return _exec(real, args)              # version, help, cache, instance list, … (no policy needed)
    from sifguard.policy.loader import load_fast
    from sifguard.slurm import context
    from sifguard.slurm.gate import Gate
    policy = load_fast(cfg.policy)
    gate = Gate(policy, "shim", seal_limit=cfg.seal_limit, store=cfg.store_access())
    ctx = context.for_caller(cfg, policy)
    adm = gate.admit(inv, ctx, os.getcwd(), pin_image=True, argv=[tool] + args)
    if not adm.allowed:
        return _fail(f"refused: {adm.message}")
    if adm.run_path is not None:              # the store's verified copy, held in use until the runtime exits
        args[adm.image_index - 1] = adm.run_path
        os.set_inheritable(adm.held_fd, True)
    elif adm.pinned_fd is not None:
        args[adm.image_index - 1] = f"/proc/self/fd/{adm.pinned_fd}"
        if gate.store_problem:            # the store is configured but could not serve: say so, once
            print(f"sifguard: {gate.store_problem}; running a sealed in-memory copy instead", file=sys.stderr)
    return _exec(real, args)


def _exec(real: str, args: list[str]) -> int:
    try:
        os.execv(real, [real] + args)
    except OSError as e:
        return _fail(f"cannot run {real}: {e.strerror}")
    return 1  # not reached
