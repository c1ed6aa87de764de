#!/usr/bin/env python3
"""Speed of the controller prolog's job-script scanner (runs on every job).

Scans a realistic 200-line and a 10 000-line batch script (containers under srun, if/
case/loops, pipes, variables, cd) and prints the median time per scan, with `bash -n`
(bash only parsing the same file, in a fresh process) as the peer, and the cost of
importing the scanner (tree-sitter and its bash grammar) in a fresh interpreter.

Goal: a 200-line script well under the prolog's 200 ms budget.
Usage: tests/bench/script_scan_speed.py
"""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT]

POOL = [
    "module load apptainer",
    "srun -n 4 apptainer exec --bind $DATA:/data $IMG python run.py --step {i}",
    "if [ -f out{i}.txt ]; then echo done {i}; else apptainer run /img/b{i}.sif; fi",
    'for f in a b c; do echo "$f {i}" >> log; done',
    "cd /scratch/u || exit 1",
    "x{i}=$(date +%s)",
    'case "$x{i}" in 1) apptainer exec /c.sif true;; *) :;; esac',
    "python3 analyse.py --in data{i}.h5 | tee out{i}.log",
    'echo "step {i}" >&2',
    "mpirun -np 8 singularity exec ./local{i}.sif ./a.out",
    "bash -c 'apptainer run /inner{i}.sif'",
]


def make(n: int) -> str:
    rnd = random.Random(n)
    out = ["#!/bin/bash", "#SBATCH -N 1", "IMG=/shared/img.sif", "export DATA=/data"]
    while len(out) < n:
        out.append(rnd.choice(POOL).format(i=len(out)))
    return "\n".join(out) + "\n"


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    from sifguard.slurm.script_scan import scan
    env = {"HOME": "/home/u", "SLURM_SUBMIT_DIR": "/home/u"}
    bash = shutil.which("bash")
    imp = median_ms(lambda: subprocess.run([sys.executable, "-c", "import sifguard.slurm.script_scan as s; "
                                            "s.scan('#!/bin/bash\\ntrue\\n')"], cwd=ROOT, check=True), 5)
    base = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 5)
    print(f"import + first scan in a fresh interpreter: {imp - base:.1f} ms over the bare interpreter")
    for n, reps in ((200, 30), (10_000, 3)):
        script = make(n)
        scan(script, env, "/home/u")
        ms = median_ms(lambda: scan(script, env, "/home/u"), reps)
        r = scan(script, env, "/home/u")
        line = f"{n:>6} lines: scan {ms:8.1f} ms  ({len(r.images)} images, {len(r.unresolved)} deferred)"
        if bash:
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write(script)
            try:
                peer = median_ms(lambda: subprocess.run([bash, "-n", f.name], check=True), reps)
            finally:
                os.unlink(f.name)
            line += f"   bash -n {peer:7.1f} ms   ratio {ms / peer:5.2f}"
        print(line)


if __name__ == "__main__":
    main()
