"""The job context a hook decides in, from sources the job's user cannot write.

- user and group: the kernel's credentials of the caller (or Slurm's for root hooks);
- account and partition: Slurm's own record of the job (`scontrol show job`), for a
  job identified by Slurm itself — the SPANK item / PrologSlurmctld environment for
  root hooks, `scontrol pidinfo <own pid>` (slurmd's process tracking) for the shim —
  and only after checking the record's owner is the caller.
The task environment (SLURM_JOB_PARTITION, SLURM_JOB_ID, …) is never believed. What
cannot be established is UNKNOWN, and rule selection then weighs every rule the
attribute could select (policy.decide.candidate_rules): never a more lenient rule.
Slurm is only asked when some rule of the policy looks at account or partition.
"""

from __future__ import annotations

import grp
import os
import pwd
import re

from sifguard.errors import SlurmError
from sifguard.policy.decide import UNKNOWN, JobContext, uses_job_attributes
from sifguard.policy.model import Policy
from sifguard.slurm.config import HookConfig


def user_name(uid: int) -> str:
    """The login name of uid; the number when this host cannot resolve it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def group_name(gid: int) -> str:
    """The name of gid; the number when this host cannot resolve it."""
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)



def _record(cfg: HookConfig, job_id: str, uid: int) -> dict | None:
    """Slurm's record of the job, when it exists and belongs to `uid`."""
    from sifguard.slurm.jobinfo import parse_show_job, scontrol
    if not job_id.isdigit():
        return None
    try:
        info = parse_show_job(scontrol(cfg, "show", "job", "-o", job_id, timeout=10))
    except SlurmError:   # no answer: the attributes stay UNKNOWN
        return None
    m = re.search(r"\((\d+)\)", info.get("UserId", ""))
    if not m or int(m.group(1)) != uid:
        return None
    return info


def _attrs(info: dict | None) -> tuple:
    if info is None:
        return UNKNOWN, UNKNOWN
    account = info.get("Account") or None
    return (None if account in (None, "(null)") else account), (info.get("Partition") or None)


def for_job(cfg: HookConfig, policy: Policy, job_id: str, uid: int, gid: int) -> JobContext:
    """Root hooks: the job id and uid come from Slurm (SPANK items, prolog environment)."""
    account = partition = None
    if uses_job_attributes(policy) & {"account", "partition"}:
        account, partition = _attrs(_record(cfg, job_id, uid))
    return JobContext(user=user_name(uid), group=group_name(gid), account=account, partition=partition, job_id=job_id)


def for_record(job) -> JobContext:
    """The controller prolog: everything from Slurm's record of the job (jobinfo.Job)."""
    return JobContext(user=job.user, group=group_name(job.gid), account=job.account or None,
                      partition=job.partition or None, job_id=job.job_id)


def job_of_pid(cfg: HookConfig, pid: int) -> str | None:
    """The job slurmd tracks `pid` in (`scontrol pidinfo`), or None."""
    from sifguard.slurm.jobinfo import scontrol
    try:
        out = scontrol(cfg, "pidinfo", str(pid), timeout=10)
    except SlurmError:   # not in a job on this node, or slurmd unreachable
        return None
    m = re.search(r"JobId=(\d+)", out)
    return m.group(1) if m else None


def for_caller(cfg: HookConfig, policy: Policy) -> JobContext:
    """The shim (runs as the job's user): credentials from the kernel, the job from slurmd."""
    uid, gid = os.getuid(), os.getgid()
    ctx = JobContext(user=user_name(uid), group=group_name(gid))
    if not uses_job_attributes(policy) & {"account", "partition"}:
        return ctx
    job_id = job_of_pid(cfg, os.getpid())
    account, partition = _attrs(_record(cfg, job_id, uid) if job_id else None)
    return JobContext(user=ctx.user, group=ctx.group, account=account, partition=partition, job_id=job_id)
