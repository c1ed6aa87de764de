"""`sifguard slurm install`: put the hooks in place and say which Slurm lines enable them.

Copies prolog/ (from the source tree, or share/sifguard/prolog of an installed
package) into PREFIX with each script's shebang set to this Python in isolated mode
(`-I`: no PYTHONPATH or user site from a job's environment), writes the hooks'
root-owned configuration, and builds the SPANK plugin with the C compiler against
libslurm-dev's <slurm/spank.h>.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from sifguard.errors import BadInputError


def prolog_source() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for d in (os.path.join(here, "prolog"), os.path.join(sys.prefix, "share", "sifguard", "prolog")):
        if os.path.isfile(os.path.join(d, "sifguard-prolog-slurmctld")):
            return d
    raise BadInputError("cannot find sifguard's prolog/ directory (install from a source checkout)")


def _python_paths(python: str) -> list[str]:
    """sys.path entries the hooks need (sifguard and its dependencies) for `python`, so the
    hooks can start with -S (no site: no .pth processing, ~25-40 ms less per job step)."""
    code = ("import json, os, sys, site, sifguard; "
            "print(json.dumps([os.path.dirname(os.path.dirname(sifguard.__file__))] + site.getsitepackages()))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)
    except (subprocess.SubprocessError, ValueError, OSError):
        return []


def _flavor(singularity: str) -> str:
    """Apptainer installs `singularity` as a link to itself; anything else is SingularityCE."""
    real = os.path.basename(os.path.realpath(singularity))
    return "apptainer" if real == "apptainer" or not os.path.exists(singularity) else "singularityce"


def _copy_script(src: str, dst: str, python: str, subst: dict | None = None, paths: list | None = None) -> None:
    with open(src, encoding="utf-8") as f:
        text = f.read()
    if text.startswith("#!/usr/bin/env python3"):
        head, _, body = text.partition("\n")
        if paths:
            # isolated and without site: the job's environment cannot steer imports
            text = f"#!{python} -IS\nimport sys; sys.path[:0] = {paths!r}\n" + body
        else:
            text = f"#!{python} -I\n" + body
    for k, v in (subst or {}).items():
        text = text.replace(k, v)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


def install(prefix: str, policy: str, slurm_conf: str, apptainer: str, singularity: str,
            state_dir: str = "", python: str | None = None, build_spank: bool = True,
            singularity_flavor: str | None = None, seal_limit: int | None = None,
            store: str = "", stager_socket: str = "") -> dict:
    python = python or sys.executable
    src = prolog_source()
    prefix = os.path.abspath(prefix)
    shim = os.path.join(prefix, "shim")
    os.makedirs(shim, mode=0o755, exist_ok=True)
    os.chmod(prefix, 0o755)
    paths = _python_paths(python)
    for name in ("sifguard-prolog-slurmctld", "sifguard-spank-check", "sifguard-precheck"):
        _copy_script(os.path.join(src, name), os.path.join(prefix, name), python, paths=paths)
    lua = os.path.join(prefix, "cli_filter.lua")
    _copy_script(os.path.join(src, "sifguard-cli-filter.lua"), lua, python,
                 {"@PRECHECK@": os.path.join(prefix, "sifguard-precheck")})
    os.chmod(lua, 0o644)
    _copy_script(os.path.join(src, "sifguard-task-prolog"), os.path.join(prefix, "sifguard-task-prolog"),
                 python, {"@SHIM_DIR@": shim})
    for tool in ("apptainer", "singularity"):
        _copy_script(os.path.join(src, "sifguard-shim"), os.path.join(shim, tool), python, paths=paths)
    bin_dir = os.path.dirname(shutil.which("scontrol") or "/usr/bin/scontrol")
    conf = {"policy": os.path.abspath(policy), "slurm_conf": os.path.abspath(slurm_conf),
            "apptainer": apptainer, "singularity": singularity, "shim_dir": shim,
            "state_dir": state_dir, "bin_dir": bin_dir,
            "singularity_flavor": singularity_flavor or _flavor(singularity)}
    if seal_limit is not None:
        conf["seal_limit"] = seal_limit
    if store:
        conf["store"] = os.path.abspath(store)
        conf["stager_socket"] = os.path.abspath(stager_socket) if stager_socket else ""
    cpath = os.path.join(prefix, "sifguard-slurm.json")
    with open(cpath + ".tmp", "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=2)
    os.chmod(cpath + ".tmp", 0o644)
    os.replace(cpath + ".tmp", cpath)
    so = os.path.join(prefix, "sifguard_spank.so")
    if build_spank:
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise BadInputError("no C compiler to build the SPANK plugin (apt-get install gcc libslurm-dev)")
        p = subprocess.run([cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", so,
                            os.path.join(src, "spank", "sifguard_spank.c")], capture_output=True, text=True)
        if p.returncode != 0:
            raise BadInputError(f"building the SPANK plugin failed (is libslurm-dev installed?): "
                                f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return {
        "config": cpath,
        "slurm.conf": [f"PrologSlurmctld={prefix}/sifguard-prolog-slurmctld",
                       f"TaskProlog={prefix}/sifguard-task-prolog"],
        "plugstack.conf": [f"required {so} helper={prefix}/sifguard-spank-check config={cpath} shim={shim}"],
        # submit-time feedback: Slurm reads cli_filter.lua from slurm.conf's directory
        "cli_filter": ["CliFilterPlugins=cli_filter/lua",
                       f"# and: install -m 0644 {lua} {os.path.join(os.path.dirname(os.path.abspath(slurm_conf)), 'cli_filter.lua')}"],
    }
