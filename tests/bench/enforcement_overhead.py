#!/usr/bin/env python3
"""Enforcement overhead on the job-start path (no Slurm daemons needed):

* controller prolog decision for a job whose script names 3 images — cold (empty
  caches) and warm (verified-image cache and OCSP cache filled), in-process and as a
  fresh process like the real PrologSlurmctld (interpreter + imports + decision);
* the shim: `shim/apptainer exec IMAGE true` (parse, sealed copy, verify, exec)
  versus calling the stand-in runtime directly, for a 40 KiB and a 64 MiB image;
* submit-time feedback: the installed `sifguard-precheck` (what cli_filter.lua runs) on a
  job script naming 3 images, as a process — small images and 3 × 64 MiB (size-independent:
  the data is not read), against `openssl version` as the floor of a process.

Goals: warm prolog <= 200 ms, shim <= 100 ms, precheck <= 300 ms.
Usage: tests/bench/enforcement_overhead.py
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]
from benchlib import (SG, compile_bytecode, free_port, make_ca, median_ms, policy as make_policy,  # noqa: E402
                      responder, sign)


def main():
    compile_bytecode(ROOT)
    from sifguard.policy.loader import load
    from sifguard.slurm.gate import Gate
    from sifguard.slurm.config import HookConfig
    from sifguard.slurm.controller import decide_job
    from sifguard.slurm.jobinfo import Job
    from sifguard.sif.image import NewObject, create
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        ca = make_ca(d, port)
        imgs = []
        for i in range(3):
            p = f"{d}/img{i}.sif"
            shutil.copyfile(os.path.join(ROOT, "tests", "data", "apptainer", "images", "busybox_amd64.sif"), p)
            sign(d, p)
            imgs.append(p)
        big = f"{d}/big.sif"
        with open(f"{d}/part", "wb") as f:
            f.write(os.urandom(64 << 20))
        create(big, [NewObject(0x4004, path=f"{d}/part", group=1, extra=b"\x01\0\0\0\x02\0\0\x0002\0")])
        sign(d, big)
        with responder(ca, port):
            def policy(tag):
                return make_policy(d, ca, tag)
            script = "#!/bin/bash\n" + "".join(f"srun apptainer exec {p} true\n" for p in imgs)
            job = Job("1", user="root", uid=0, gid=0, work_dir=d, script=script, env={"HOME": "/root"})
            cfg = HookConfig(policy="")

            def prolog_inproc(pol):
                reasons = decide_job(cfg, job, Gate(load(pol), "prolog-slurmctld"))
                assert not reasons, reasons
            prolog_code = ("import sys; from sifguard.slurm.controller import decide_job; "
                           "from sifguard.slurm.jobinfo import Job; from sifguard.slurm.config import HookConfig; "
                           "from sifguard.slurm.gate import Gate; from sifguard.policy.loader import load_fast as load; "
                           f"job = Job('1', user='root', uid=0, gid=0, work_dir={d!r}, script={script!r}); "
                           "r = decide_job(HookConfig(policy=''), job, Gate(load(sys.argv[1]), 'prolog-slurmctld')); "
                           "sys.exit(1 if r else 0)")

            def prolog_proc(pol):
                subprocess.run([sys.executable, "-I", "-c", prolog_code, pol], check=True)

            print("controller prolog, job naming 3 signed images (busybox, 0.8 MiB each), medians:")
            for name, fn in (("in-process", prolog_inproc), ("as a process", prolog_proc)):
                colds = []
                for i in range(3):
                    p = policy(f"{name}-cold-{i}")
                    t = time.perf_counter()
                    fn(p)
                    colds.append((time.perf_counter() - t) * 1000)
                wp = policy(f"{name}-warm")
                fn(wp)
                warm = median_ms(lambda: fn(wp))
                print(f"  {name:<13} cold {statistics.median(colds):7.1f} ms   warm {warm:7.1f} ms")

            # --- the shim ---------------------------------------------------------
            standin = f"{d}/apptainer-standin"
            open(standin, "w").write("#!/bin/sh\n# stand-in runtime: records nothing, runs CMD\n"
                                     "shift; shift; exec \"$@\"\n")
            os.chmod(standin, 0o755)
            sp = policy("shim")
            subprocess.run(SG + ["slurm", "install", "--prefix", f"{d}/hooks", "--policy", sp, "--apptainer", standin,
                                 "--singularity", standin, "--no-spank", "--slurm-conf", f"{d}/slurm.conf"],
                           check=True, capture_output=True)
            shim = f"{d}/hooks/shim/apptainer"
            print("shim before exec vs the stand-in runtime called directly (revocation cached), medians:")
            for label, img in (("busybox 0.8 MiB", imgs[0]), ("64 MiB", big)):
                subprocess.run([shim, "exec", img, "true"], check=True)
                direct = median_ms(lambda: subprocess.run([standin, "exec", img, "true"], check=True))
                shimmed = median_ms(lambda: subprocess.run([shim, "exec", img, "true"], check=True))
                print(f"  {label:<16} direct {direct:6.1f} ms   via shim {shimmed:7.1f} ms   "
                      f"overhead {shimmed - direct:7.1f} ms")

            # --- submit-time feedback (cli_filter -> sifguard-precheck) -------------
            pre = f"{d}/hooks/sifguard-precheck"
            bigs = []
            for i in range(3):
                b = f"{d}/big{i}.sif"
                shutil.copyfile(big, b)
                bigs.append(b)
            print("submit-time precheck of a job script naming 3 images (as a process, cold OCSP cache "
                  "first, then the medians):")
            peer = shutil.which("openssl")
            for label, names in (("3 x busybox", imgs), ("3 x 64 MiB", bigs)):
                js = f"{d}/job-{label.replace(' ', '')}.sh"
                open(js, "w").write("#!/bin/bash\n" + "".join(f"apptainer exec {p} true\n" for p in names))
                cmd = [pre, "--policy", policy(f"pre-{label}"), "--lua", "--", js]
                first = median_ms(lambda: subprocess.run(cmd, check=True, capture_output=True), 1)
                warm = median_ms(lambda: subprocess.run(cmd, check=True, capture_output=True), 9)
                print(f"  {label:<12} first {first:6.1f} ms   median {warm:6.1f} ms (goal <= 300 ms)")
            if peer:
                ref = median_ms(lambda: subprocess.run([peer, "version"], check=True, capture_output=True), 9)
                print(f"  peer: `openssl version` as a process {ref:.1f} ms (the floor of any exec)")


if __name__ == "__main__":
    main()
