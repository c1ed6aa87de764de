"""Where the Slurm hooks find their settings: a root-owned JSON file written by
`sifguard slurm install` next to the hooks (never the job's environment)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from sifguard.errors import BadInputError

DEFAULT = "/etc/sifguard/slurm.json"


@dataclass(frozen=True)
class HookConfig:
    policy: str
    slurm_conf: str = "/etc/slurm/slurm.conf"
    apptainer: str = "/usr/bin/apptainer"
    singularity: str = "/usr/bin/singularity"
    shim_dir: str = ""
    state_dir: str = ""          # slurmctld StateSaveLocation (job environments), optional
    bin_dir: str = "/usr/bin"    # where scontrol/scancel live (hooks run without PATH)
    copy_dir: str = ""           # unused since sealed copies only (kept so older configs load)
    seal_limit: int = 1 << 30    # largest image pinned in a sealed in-memory copy (the fallback without a store)
    apptainer_flavor: str = "apptainer"      # whose flag table parses `apptainer …`
    singularity_flavor: str = "apptainer"    # `singularity` is Apptainer's compat name, or "singularityce"
    store: str = ""              # the verified image store directory ("" = none: sealed copies only)
    stager_socket: str = ""      # the stager's Unix socket (`sifguard store serve`)
    stager_timeout: float = 600.0

    def store_access(self):
        if not self.store:
            return None
        from sifguard.slurm.gate import StoreAccess
        return StoreAccess(self.store, self.stager_socket, self.policy, self.stager_timeout)

    def flavor(self, tool: str) -> str:
        return self.singularity_flavor if tool == "singularity" else self.apptainer_flavor


def find(script: str | None = None) -> str:
    cands = []
    if script:
        cands.append(os.path.join(os.path.dirname(os.path.realpath(script)), "sifguard-slurm.json"))
    cands.append(DEFAULT)
    for c in cands:
        if os.path.exists(c):
            return c
    raise BadInputError(f"no sifguard Slurm configuration (looked for {', '.join(cands)})")


def load(path: str) -> HookConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return HookConfig(**data)
    except (OSError, ValueError, TypeError) as e:
        raise BadInputError(f"{path}: unusable sifguard Slurm configuration: {e}") from None
