"""Reading a job from a Slurm hook: pyslurm when it imports, else `scontrol`.

Hooks run without PATH (and PrologSlurmctld without SLURM_CONF), so the commands are
called by absolute path with SLURM_CONF set from the hook configuration.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from dataclasses import dataclass, field

from sifguard.errors import SlurmError
from sifguard.slurm.config import HookConfig


@dataclass
class Job:
    job_id: str
    user: str = ""
    uid: int = -1
    gid: int = -1
    account: str = ""
    partition: str = ""
    work_dir: str = "/"
    stdout: str = ""
    stderr: str = ""
    script: str = ""              # batch script, or the srun command line
    batch: bool = True
    env: dict = field(default_factory=dict)
    env_complete: bool = False    # env is the job's whole stored environment (else names may be missing)


def _env(cfg: HookConfig) -> dict:
    return {"SLURM_CONF": cfg.slurm_conf, "PATH": f"{cfg.bin_dir}:/usr/bin:/bin", "LC_ALL": "C"}


def scontrol(cfg: HookConfig, *args: str, timeout: float = 20) -> str:
    exe = os.path.join(cfg.bin_dir, "scontrol")
    try:
        p = subprocess.run([exe, *args], capture_output=True, text=True, env=_env(cfg), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"scontrol {' '.join(args)}: {e}") from None
    if p.returncode != 0:
        raise SlurmError(f"scontrol {' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def parse_show_job(text: str) -> dict:
    """`scontrol show job -o` output as a dict (values may hold spaces: split on ' Key=')."""
    out = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s[A-Za-z][A-Za-z0-9_:/]*=|$)", text.strip()):
        out.setdefault(m.group(1), m.group(2))
    return out


def _job_environment(cfg: HookConfig, job_id: str) -> dict | None:
    """The environment sbatch stored with the job (what its batch step starts with), or
    None when it cannot be read."""
    if not cfg.state_dir:
        return None
    p = os.path.join(cfg.state_dir, f"hash.{int(job_id) % 10}", f"job.{job_id}", "environment")
    try:
        with open(p, "rb") as f:
            data = f.read(4 << 20)
    except OSError:
        return None
    env = {}
    for item in data.split(b"\0"):
        k, sep, v = item.decode("utf-8", "replace").partition("=")
        if sep and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            env[k] = v
    return env


def _pyslurm_info(jid: str) -> tuple[dict, str | None] | None:
    """Job fields (scontrol's names) and batch script through pyslurm, when a build that
    matches this Slurm imports; None otherwise (no PyPI build matches Slurm 22.05, so the
    scontrol path below is the one tested here)."""
    try:
        import pyslurm  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or built for another Slurm
        return None
    try:
        j = pyslurm.job().find_id(jid)[0]
        info = {"UserId": f"{j.get('user_name') or ''}({j['user_id']})", "GroupId": f"({j['group_id']})",
                "Account": j.get("account") or "", "Partition": j.get("partition") or "",
                "WorkDir": j.get("work_dir") or "/", "StdOut": j.get("std_out") or "",
                "StdErr": j.get("std_err") or "", "BatchFlag": "1" if j.get("batch_flag") else "0",
                "Command": j.get("command") or ""}
        script = pyslurm.job().get_batch_script(int(jid)) if j.get("batch_flag") else None
        return info, script
    except Exception:  # noqa: BLE001 - API drift between pyslurm releases: use scontrol
        return None


def read_job(cfg: HookConfig, environ: dict) -> Job:
    jid = environ["SLURM_JOB_ID"]
    via_pyslurm = _pyslurm_info(jid)
    info = via_pyslurm[0] if via_pyslurm else parse_show_job(scontrol(cfg, "show", "job", "-o", jid))
    job = Job(jid)
    job.user = environ.get("SLURM_JOB_USER") or info.get("UserId", "").split("(")[0]
    job.uid = int(environ.get("SLURM_JOB_UID") or re.sub(r".*\((\d+)\).*", r"\1", info.get("UserId", "(-1)")))
    job.gid = int(environ.get("SLURM_JOB_GID") or re.sub(r".*\((\d+)\).*", r"\1", info.get("GroupId", "(-1)")))
    job.account = environ.get("SLURM_JOB_ACCOUNT") or info.get("Account", "")
    if job.account == "(null)":
        job.account = ""
    job.partition = environ.get("SLURM_JOB_PARTITION") or info.get("Partition", "")
    job.work_dir = environ.get("SLURM_JOB_WORK_DIR") or info.get("WorkDir", "/")
    job.stdout = environ.get("SLURM_JOB_STDOUT") or info.get("StdOut", "")
    job.stderr = environ.get("SLURM_JOB_STDERR") or info.get("StdErr", "")
    job.batch = info.get("BatchFlag", "1") == "1"
    if job.batch:
        job.script = (via_pyslurm[1] if via_pyslurm and via_pyslurm[1] is not None
                      else scontrol(cfg, "write", "batch_script", jid, "-"))
    else:
        job.script = info.get("Command", "")
    stored = _job_environment(cfg, jid) if job.batch else None
    env = dict(stored or {})
    job.env_complete = stored is not None
    try:
        pw = pwd.getpwnam(job.user)
        env.setdefault("HOME", pw.pw_dir)
        env.setdefault("USER", job.user)
    except KeyError:
        pass
    env["SLURM_JOB_ID"] = jid       # slurmstepd sets it, whatever the submission said
    job.env = env
    return job
