"""PrologSlurmctld: decide every statically visible container image of a job before
it starts. A refused job is cancelled (a terminal state: no requeue loop, no drained
node), the reason goes to the job's output file, to AdminComment (visible in
`scontrol show job`) and to the audit log. Images named only at run time are logged
and left to the task shim and the SPANK hook. Any internal failure refuses the job.
"""

from __future__ import annotations

import os
import subprocess
import sys

from sifguard.slurm import config as hookconf
from sifguard.slurm import jobinfo
from sifguard.slurm.gate import reaches_runtime_directly
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


def decide_job(cfg: hookconf.HookConfig, job: jobinfo.Job, gate) -> list[str]:
    """The refusal reasons for this job (empty: it may run)."""
    from sifguard.slurm.context import for_record
    ctx = for_record(job)
    found = scan(job.script, job.env, job.work_dir, env_complete=job.env_complete)
    reasons = []
    for f in found.found:
        where = {"line": f.line, "command": f.text[:500]}
        if f.resolved and f.error:
            reasons.append(gate.refuse(f"line {f.line}: {f.program or f.tool}: command line not understood, so "
                                       f"which image it would run is unknown: {f.error}", ctx, **where).message)
            continue
        # by bare name through the job's unchanged PATH it reaches the shim (the SPANK plugin
        # and TaskProlog put it first); by any other path, through a changed or ignored PATH,
        # or a SIF executed directly, it is direct — refused whether or not the image is
        # certain: in the batch step nothing after this prolog would see it
        if reaches_runtime_directly(f, cfg.shim_dir):
            what = "executes a SIF image directly" if f.tool == "sif" else \
                "reaches the container runtime without sifguard's shim (by path, or through a changed PATH)"
            adm = gate.refuse_direct(f"line {f.line}: `{f.text[:200]}` {what}", ctx, **where)
            if adm is not None:
                reasons.append(adm.message)
                continue
        if not f.resolved:
            gate.defer(ctx, f.note, **where)
            continue
        flavor = cfg.flavor(f.tool) if f.tool in ("apptainer", "singularity") else None
        adm = gate.admit_image(f.image, ctx, job.work_dir, missing="defer", flavor=flavor, stage=True, **where)
        if not adm.allowed:
            reasons.append(adm.message)
    return reasons


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
        from sifguard.policy.loader import load_fast as load
        from sifguard.slurm.gate import Gate
        job = jobinfo.read_job(cfg, environ)
        gate = Gate(load(cfg.policy), "prolog-slurmctld", as_user=(job.uid, job.gid), audit_extra={"job": job.job_id},
                    store=cfg.store_access())
        reasons = decide_job(cfg, job, gate)
    except Exception as e:  # noqa: BLE001 - fail closed
        reasons = [f"internal error while checking the job's containers ({type(e).__name__}: {e}); refusing"]
    if reasons:
        refuse(cfg, job, "; ".join(reasons))
    return 0
