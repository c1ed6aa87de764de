"""Where the Slurm hooks find their settings: a root-owned JSON file written by
`sifguard slurm install` next to the hooks (never the job's environment)."""

from __future__ import annotations

import json
import os

from sifguard.errors import BadInputError

DEFAULT = "/etc/sifguard/slurm.json"


_FIELDS = {
    "policy": None,                       # required
    "slurm_conf": "/etc/slurm/slurm.conf",
    "apptainer": "/usr/bin/apptainer",
    "singularity": "/usr/bin/singularity",
    "shim_dir": "",
    "state_dir": "",                      # slurmctld StateSaveLocation (job environments), optional
    "bin_dir": "/usr/bin",                # where scontrol/scancel live (hooks run without PATH)
    "copy_dir": "",                       # unused since sealed copies only (kept so older configs load)
    "seal_limit": 1 << 30,                # largest image pinned in a sealed in-memory copy (fallback without a store)
    "apptainer_flavor": "apptainer",      # whose flag table parses `apptainer …`
    "singularity_flavor": "apptainer",    # `singularity` is Apptainer's compat name, or "singularityce"
    "store": "",                          # the verified image store directory ("" = none: sealed copies only)
    "stager_socket": "",                  # the stager's Unix socket (`sifguard store serve`)
    "stager_timeout": 600.0,
}


class HookConfig:
    """The hooks' settings (read-only). A plain class rather than a dataclass: the shim
    loads it once per task, and every dataclass costs start-up time."""

    __slots__ = tuple(_FIELDS)

    def __init__(self, **kw):
        unknown = set(kw) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "policy" not in kw:
            raise TypeError("missing setting: policy")
        for k, default in _FIELDS.items():
            object.__setattr__(self, k, kw.get(k, default))

    def __setattr__(self, k, v):
        raise AttributeError("HookConfig is read-only")

    def __repr__(self) -> str:
        return "HookConfig(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in _FIELDS) + ")"

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
