"""Submission context (client side): what the start-time gate will say, said at `sbatch` /
`srun` time, through Slurm's cli_filter/lua (prolog/sifguard-cli-filter.lua calls
`sifguard slurm precheck`).

It runs as the submitting user, before the job exists, so it is feedback only — a user can
bypass a client filter; the controller prolog stays authoritative. The job script (or the
srun command line) goes through the prolog's scanner; each image it names statically is
judged the quick way: from what the verified image store or the verified-image cache recorded
when the image is known there (exact: its content was hashed), else by its signatures, signers, header and descriptors and the policy's rules and
revocation (cache first) without reading the objects' data — any image size costs the
same. A refusal names the script line; what cannot be judged (an image named at run time,
a rule that depends on a partition the user did not give) is a warning, never a refusal.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from sifguard.policy.decide import UNKNOWN, JobContext, candidate_rules

REFUSE, WARN, OK = "refuse", "warn", "ok"


@dataclass
class Note:
    level: str                # refuse | warn | ok
    where: str                # "job.sh:12" or "srun"
    message: str

    def line(self) -> str:
        word = {REFUSE: "error", WARN: "warning", OK: "ok"}[self.level]
        return f"{word}: sifguard: {self.where}: {self.message}"


@dataclass
class Outcome:
    notes: list[Note] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(n.level == REFUSE for n in self.notes)

    def lines(self) -> list[str]:
        return [n.line() for n in self.notes if n.level != OK]


def _script_of(argv: list[str], wrap: str | None, cwd: str) -> tuple[str, str, str] | None:
    """(text to scan, name for messages, kind) — the batch script or --wrap, or the srun
    command line; None when there is nothing to look at (a script read from stdin)."""
    if wrap:
        return "#!/bin/sh\n" + wrap + "\n", "--wrap", "wrap"
    if not argv:
        return None
    first = argv[0] if os.path.isabs(argv[0]) else os.path.join(cwd, argv[0])
    try:
        with open(first, "rb") as f:
            head = f.read(1 << 20)
        if head.startswith(b"#!") or b"\0" not in head[:4096]:
            if not head.startswith(b"\x7fELF") and b"SIF_MAGIC" not in head[:64]:
                return head.decode("utf-8", "replace"), os.path.basename(argv[0]), "script"
    except OSError:
        pass
    return shlex.join(argv) + "\n", "command", "argv"


def precheck(policy, argv: list[str], wrap: str | None = None, cwd: str | None = None, env: dict | None = None,
             account: str | None = None, partition: str | None = None, shim_dir: str = "",
             store: str = "") -> Outcome:
    """Judge the images a job would run, as far as can be known before it is submitted."""
    from sifguard.slurm.gate import image_source, reaches_runtime_directly
    from sifguard.slurm.script_scan import scan
    cwd = cwd or os.getcwd()
    env = dict(os.environ if env is None else env)
    out = Outcome()
    what = _script_of(argv, wrap, cwd)
    if what is None:
        return out
    text, name, kind = what
    found = scan(text, env, cwd, env_complete=True)
    ctx = _context(account, partition)
    engine = None
    for f in found.found:
        where = f"{name}:{f.line}" if kind != "argv" else "command"
        if f.resolved and f.error:
            out.notes.append(Note(REFUSE, where, f"{f.program or f.tool}: command line not understood, so which "
                                  f"image it would run is unknown: {f.error}"))
            continue
        if shim_dir and reaches_runtime_directly(f, shim_dir):
            out.notes.append(Note(WARN, where, "reaches the container runtime without sifguard's shim (by path, "
                                  "or through a changed PATH): the site policy decides at start"))
        if not f.resolved:
            out.notes.append(Note(WARN, where, f"image not known before the job runs ({f.note}): checked at start"))
            continue
        scheme = image_source(f.image)
        if scheme != "local":
            if scheme not in policy.runtime.allow_sources:
                out.notes.append(Note(REFUSE, where, f"{f.image}: image source '{scheme}' is not allowed by the "
                                      "site policy"))
            continue
        path = f.image if os.path.isabs(f.image) else os.path.join(cwd, f.image)
        if engine is None:
            from sifguard.enforce.decide import Engine
            engine = Engine(policy)
        out.notes.append(_judge(engine, path, f.image, where, ctx, store))
    return out


def _context(account, partition) -> JobContext:
    """The submitter as the start-time hooks will name it (slurm/context.py)."""
    from sifguard.slurm.context import group_name, user_name
    return JobContext(user=user_name(os.getuid()), group=group_name(os.getgid()), account=account or UNKNOWN,
                      partition=partition or UNKNOWN)


def _stored(engine, path: str, store: str):
    """Findings the image store recorded for these bytes (hashed when staged), or None."""
    try:
        from sifguard.store import lookup, records
        from sifguard.store.layout import Store
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            s = Store(store)
            idx = lookup.index_record(s, lookup.source_key(fd, st), st)
        finally:
            os.close(fd)
        rec = records.read(s.findings_path(idx["digest"], engine.roots_id)) if idx else None
        return engine.findings_from_record(rec) if rec and rec.get("format") == 2 else None
    except Exception:  # noqa: BLE001 - the store only saves work here; the quick look stands in
        return None


def _judge(engine, path: str, shown: str, where: str, ctx: JobContext, store: str = "") -> Note:
    """One image, the quick way (see the module docstring)."""
    from sifguard.enforce import core
    from sifguard.errors import SifguardError
    if not os.path.lexists(path):
        return Note(WARN, where, f"{shown}: does not exist yet: checked when the job starts")
    real = os.path.realpath(path)
    rules = candidate_rules(engine.policy, real, ctx)
    try:
        if all(r.require == "any" or core.rule_actions(r)["integrity"] == "skip" for r in rules):
            return Note(OK, where, f"{shown}: no signature required")
        findings = (_stored(engine, path, store) if store else None) or \
            engine.findings(path, hash_objects=False)      # the image cache's record, else the quick look
    except FileNotFoundError:
        return Note(WARN, where, f"{shown}: does not exist yet: checked when the job starts")
    except (SifguardError, OSError) as e:
        return Note(REFUSE, where, f"{shown}: {e}")
    v = engine.decide_findings(real, ctx, findings, rules)
    if v.allowed:
        return Note(OK, where, f"{shown}: {v.reason}")
    if len(rules) > 1:       # depends on an account/partition the submission does not name
        return Note(WARN, where, f"{shown}: may be refused when the job starts: {v.reason}")
    return Note(REFUSE, where, f"{shown}: {v.reason}")


def add_arguments(ap) -> None:
    ap.add_argument("--config", help="the hooks' configuration (default: the installed one)")
    ap.add_argument("--policy", help="site policy (default: the hooks' policy)")
    ap.add_argument("--account")
    ap.add_argument("--partition")
    ap.add_argument("--cwd")
    ap.add_argument("--wrap", help="sbatch --wrap command")
    ap.add_argument("--lua", action="store_true", help="output for prolog/sifguard-cli-filter.lua")
    ap.add_argument("argv", nargs="*", help="the batch script (and its arguments), or the srun command")


def run(a, script: str | None = None) -> int:
    """`sifguard slurm precheck` (and prolog/sifguard-precheck, which the cli_filter calls).
    Exit 1 when a submission would be refused; `--lua`: lines on stdout for the filter,
    ending with `result: refuse|ok`. Anything that goes wrong is a warning, never a refusal:
    the prolog decides."""
    import sys
    try:
        from sifguard.policy.loader import load_fast
        from sifguard.slurm import config as hookconf
        shim_dir, store, policy_path = "", "", a.policy
        if not policy_path or a.config:
            cfg = hookconf.load(a.config or hookconf.find(script))
            policy_path, shim_dir, store = policy_path or cfg.policy, cfg.shim_dir, cfg.store
        out = precheck(load_fast(policy_path), a.argv, a.wrap, a.cwd, account=a.account, partition=a.partition,
                       shim_dir=shim_dir, store=store)
    except Exception as e:  # noqa: BLE001 - feedback only: never block a submission on our own failure
        out = Outcome([Note(WARN, "precheck", f"not checked ({type(e).__name__}: {str(e)[:200]})")])
    lines = out.lines()
    if a.lua:
        print("\n".join(lines + [f"result: {REFUSE if out.refused else OK}"]), flush=True)
    else:
        for line in lines:
            print(line, file=sys.stderr)
    return 1 if out.refused else 0


def main(argv: list[str] | None = None, script: str | None = None) -> int:
    """The installed hook: `script` (its own path) finds the configuration beside it."""
    import argparse
    ap = argparse.ArgumentParser(prog="sifguard-precheck",
                                 description="say at submission what the start-time gate will say")
    add_arguments(ap)
    return run(ap.parse_args(argv), script)
