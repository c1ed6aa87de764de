"""PrologSlurmctld: decide every statically visible container image of a job before
it starts. A refused job is cancelled (a terminal state: no requeue loop, no drained
node), the reason goes to the job's output file, to AdminComment (visible in
`scontrol show job`) and to the audit log. Images named only at run time are logged
and left to the task shim and the SPANK hook. Any internal failure refuses the job.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from sifguard.enforce import audit
from sifguard.slurm import config as hookconf
from sifguard.slurm import jobinfo
from sifguard.slurm.script_scan import scan


def _expand_path(pattern: str, job: jobinfo.Job) -> str:
    if not pattern:
        return ""
    rep = {"%j": job.job_id, "%J": job.job_id, "%A": job.job_id, "%u": job.user, "%%": "%", "%a": "0",
           "%N": "", "%x": ""}
    out = pattern
    for k, v in rep.items():
        out = out.replace(k, v)
    return out if os.path.isabs(out) else os.path.join(job.work_dir, out)


def tell_user(job: jobinfo.Job, message: str) -> None:
    """Append the refusal to the job's output file(s), written with the job user's rights."""
    from sifguard.slurm.privileges import append_as
    for pattern in {job.stdout or os.path.join(job.work_dir, f"slurm-{job.job_id}.out"), job.stderr}:
        path = _expand_path(pattern, job)
        if not path:
            continue
        try:
            append_as(job.uid, job.gid, path, message + "\n")
        except OSError:
            pass


def refuse(cfg: hookconf.HookConfig, job: jobinfo.Job, reason: str) -> None:
    message = f"sifguard: job {job.job_id} refused: {reason}"
    tell_user(job, message)
    note = message.replace('"', "'")[:1000]
    env = {"SLURM_CONF": cfg.slurm_conf, "PATH": f"{cfg.bin_dir}:/usr/bin:/bin"}
    subprocess.run([os.path.join(cfg.bin_dir, "scontrol"), "update", f"JobId={job.job_id}", f"AdminComment={note}"],
                   env=env, capture_output=True, timeout=20)
    subprocess.run([os.path.join(cfg.bin_dir, "scancel"), "--quiet", job.job_id], env=env,
                   capture_output=True, timeout=20)
    print(message, file=sys.stderr)


def decide_job(cfg: hookconf.HookConfig, job: jobinfo.Job, engine) -> list[str]:
    """The refusal reasons for this job (empty: it may run)."""
    from sifguard.policy.decide import JobContext
    import grp
    try:
        group = grp.getgrgid(job.gid).gr_name
    except (KeyError, OverflowError):
        group = str(job.gid)
    ctx = JobContext(user=job.user, group=group, account=job.account or None,
                     partition=job.partition or None, job_id=job.job_id)
    found = scan(job.script, job.env, job.work_dir)
    reasons = []
    allowed_sources = set(engine.policy.runtime.allow_sources)
    for f in found.found:
        base = {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "hook": "prolog-slurmctld",
                "job": job.job_id, "context": ctx.as_dict(), "line": f.line, "command": f.text[:500]}
        if f.error:
            reasons.append(f"line {f.line}: {f.program or f.tool}: {f.error}")
            _audit(engine, base | {"decision": "refuse", "reason": reasons[-1]})
            continue
        if not f.resolved:
            _audit(engine, base | {"decision": "deferred", "reason": f.note})
            continue
        if "://" in f.image:
            scheme = f.image.split("://", 1)[0]
            if scheme not in allowed_sources:
                reasons.append(f"{f.image}: image source '{scheme}://' is not allowed by the site policy")
                _audit(engine, base | {"decision": "refuse", "image": f.image, "reason": reasons[-1]})
            continue
        from sifguard.slurm.privileges import open_image_as
        try:
            fd = open_image_as(job.uid, job.gid, f.image)     # the user's rights, not root's
        except FileNotFoundError:
            _audit(engine, base | {"decision": "deferred", "image": f.image,
                                   "reason": "image does not exist yet: left to the runtime hooks"})
            continue
        except OSError as e:
            reasons.append(f"{f.image}: the job's user cannot read it ({e.strerror})")
            continue
        try:
            v = engine.decide(os.path.realpath(f.image), ctx, fd=fd)
        except Exception as e:  # noqa: BLE001 - an unreadable/malformed image is refused, not a crash
            reasons.append(f"{f.image}: {e}")
            continue
        finally:
            os.close(fd)
        if not v.allowed:
            reasons.append(f"{f.image}: {v.reason}")
    return reasons


def _audit(engine, rec: dict) -> None:
    try:
        audit.append(engine.policy.audit_log, rec)
    except audit.AuditError:
        pass


def main(script_path: str | None = None, environ: dict | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    try:
        cfg = hookconf.load(hookconf.find(script_path))
    except Exception as e:  # noqa: BLE001
        print(f"sifguard prolog: {e}", file=sys.stderr)
        return 1
    job = jobinfo.Job(environ.get("SLURM_JOB_ID", "?"), user=environ.get("SLURM_JOB_USER", ""),
                      uid=int(environ.get("SLURM_JOB_UID", -1)), gid=int(environ.get("SLURM_JOB_GID", -1)),
                      work_dir=environ.get("SLURM_JOB_WORK_DIR", "/"), stdout=environ.get("SLURM_JOB_STDOUT", ""))
    try:
        from sifguard.enforce.decide import Engine
        from sifguard.policy.loader import load_fast as load
        job = jobinfo.read_job(cfg, environ)
        reasons = decide_job(cfg, job, Engine(load(cfg.policy)))
    except Exception as e:  # noqa: BLE001 - fail closed
        reasons = [f"internal error while checking the job's containers ({type(e).__name__}: {e}); refusing"]
    if reasons:
        refuse(cfg, job, "; ".join(reasons))
    return 0
