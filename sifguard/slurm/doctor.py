"""`sifguard slurm doctor`: is this controller or node set up the way `slurm install` meant?

Each check returns Check records (ok | warn | fail | skip, what was seen, the fix on a
failure). Run as root for the full picture; as a user, what needs root is skipped.
Every check is bounded in time: network and child-process checks by `timeout` each.
Nothing is changed on disk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
EXPIRY_WARN_DAYS = 30
INSTALLED_CONFIG = "sifguard-slurm.json"
DEFAULT_PREFIX = "/usr/libexec/sifguard"
SCRIPTS = ("sifguard-prolog-slurmctld", "sifguard-task-prolog", "sifguard-spank-check", "sifguard-precheck",
           "shim/apptainer", "shim/singularity")


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
    if not os.path.exists(cpath):
        err = f"{cpath}: not found (are the hooks installed here? looked for {', '.join(cands)})"
    else:
        try:
            cfg = hook_config.load(cpath)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            err = str(e)
    if not prefix:
        prefix = os.path.dirname(cfg.shim_dir) if cfg is not None and cfg.shim_dir else os.path.dirname(cpath)
    return Setup(prefix=os.path.abspath(prefix), config_path=cpath,
                 slurm_conf=slurm_conf or (cfg.slurm_conf if cfg else "/etc/slurm/slurm.conf"),
                 policy_path=policy or (cfg.policy if cfg else ""), timeout=timeout, cfg=cfg, config_error=err)


def problems_check(name: str, problems: list[tuple[str, str]], ok_detail: str) -> Check:
    if not problems:
        return Check(name, OK, ok_detail)
    return Check(name, FAIL, "; ".join(p for p, _ in problems), "; ".join(dict.fromkeys(f for _, f in problems)))


def t(s: Setup) -> float:
    if s.timeout:
        return s.timeout
    return float(s.policy.revocation.timeout) if s.policy is not None else 2.0


def steps() -> tuple:
    """The checks in order: the forks (as nobody) before any network thread starts."""
    from sifguard.slurm import doctor_install as I, doctor_state as S, doctor_trust as T
    return (I.check_config, T.check_policy, I.check_slurm_conf, I.check_live_config, I.check_plugstack,
            I.check_cli_filter, I.check_spank, I.check_hook_files, I.check_interpreters, I.check_runtimes, I.check_user_run, T.check_trust,
            S.check_store, S.check_audit, S.check_caches, T.check_revocation)


def run(s: Setup) -> list[Check]:
    """Every check in order (the forks before any network thread starts). A check that
    breaks is itself a failure, never a traceback."""
    out: list[Check] = []
    for step in steps():
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
                      "policy": s.policy_path, "timeout": t(s), "as_root": s.is_root},
            "checks": [asdict(c) for c in checks]}
