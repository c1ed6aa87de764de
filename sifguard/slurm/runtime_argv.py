"""The command-line grammar of `apptainer` and `singularity` (pure).

Finds the subcommand and the image argument the way the real tools' option parser
does: global options, subcommand options with and without values (`--bind x`,
`--bind=x`, `-B x`, `-Bx`), `--`, `instance start IMAGE NAME`. An option it does not
know is taken as a flag unless written `--opt=value` — and, since the image is the
first operand, a mistake can only shift which word is checked as the image, which
then fails closed (a word that is not a verified SIF is refused).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TOOLS = ("apptainer", "singularity")
RUNS_IMAGE = {"run", "exec", "shell", "test", "inspect", "run-help"}
INSTANCE_RUNS = {"start", "run"}
GLOBAL_VALUE = {"-c", "--config"}
GLOBAL_FLAGS = {"-d", "--debug", "-q", "--quiet", "-s", "--silent", "-v", "--verbose", "--nocolor",
                "-h", "--help", "--version"}
# Options of run/exec/shell/test/instance start that take a value (apptainer 1.x, singularity 3.x/4.x).
VALUE_OPTS = {
    "-B", "--bind", "--mount", "-H", "--home", "-o", "--overlay", "-W", "--workdir", "-S", "--scratch",
    "--env", "--env-file", "--pwd", "--hostname", "--network", "--network-args", "--security",
    "--apply-cgroups", "--app", "--fusemount", "--dns", "--add-caps", "--drop-caps", "--cpus",
    "--memory", "--memory-reservation", "--memory-swap", "--cpu-shares", "--cpuset-cpus", "--cpuset-mems",
    "--blkio-weight", "--blkio-weight-device", "--pids-limit", "--pem-path", "--docker-host",
    "--authfile", "--no-mount", "--shell", "--library", "--oci", "--platform", "--arch", "--cwd",
    "--keep-layers", "--tmp-sandbox", "--sif-fuse-opts", "--pid-file", "--dmtcp-launch",
    "--dmtcp-restart", "--containlibs", "--exclude", "--section", "--bootstrap",
}
SCHEMES = ("docker", "docker-archive", "docker-daemon", "oci", "oci-archive", "oci-sif", "library", "oras",
           "shub", "http", "https", "instance")


@dataclass(frozen=True)
class Invocation:
    tool: str                  # apptainer | singularity
    command: str               # e.g. "exec", "instance start", "version", "" (none)
    image: str | None = None   # the image operand as written
    image_index: int | None = None   # its index in argv (to substitute a verified copy)
    runs_image: bool = False
    error: str = ""            # why the command line could not be understood

    @property
    def scheme(self) -> str | None:
        """URI scheme of the image operand (docker, library, …) or None for a local path."""
        if self.image and "://" in self.image:
            s = self.image.split("://", 1)[0].lower()
            return s if s in SCHEMES else s
        if self.image and self.image.startswith("instance://"):
            return "instance"
        return None


def tool_of(arg0: str) -> str | None:
    base = os.path.basename(arg0)
    return base if base in TOOLS else None


def _skip_options(argv: list[str], i: int, value_opts: set[str], flags: set[str] = frozenset()) -> int | None:
    """Index of the first operand at or after i, honouring `--`; None when none."""
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return i + 1 if i + 1 < len(argv) else None
        if not a.startswith("-") or a == "-":
            return i
        if a.startswith("--"):
            name = a.split("=", 1)[0]
            i += 1 if ("=" in a or name not in value_opts) else 2
        else:
            name = a[:2]
            if name in value_opts and len(a) == 2:
                i += 2          # -B value
            else:
                i += 1          # -Bvalue, or a (bundle of) flag(s)
    return None


def parse(argv: list[str], flavor: str | None = None, env=None) -> Invocation:
    tool = tool_of(argv[0]) if argv else None
    if tool is None:
        return Invocation("", "", error="not an apptainer/singularity command")
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in ("-h", "--help", "--version"):
            return Invocation(tool, name.lstrip("-"))
        i += 2 if (name in GLOBAL_VALUE and "=" not in a) else 1
    if i >= len(argv):
        return Invocation(tool, "")
    cmd = argv[i]
    i += 1
    if cmd == "instance":
        if i >= len(argv):
            return Invocation(tool, "instance")
        sub = argv[i]
        if sub not in INSTANCE_RUNS:
            return Invocation(tool, f"instance {sub}")
        cmd = f"instance {sub}"
        i += 1
    elif cmd not in RUNS_IMAGE:
        return Invocation(tool, cmd)
    j = _skip_options(argv, i, VALUE_OPTS)
    if j is None:
        return Invocation(tool, cmd, runs_image=True, error=f"'{cmd}' without an image")
    return Invocation(tool, cmd, argv[j], j, runs_image=True)


def is_build_or_pull(inv: Invocation) -> bool:
    return inv.command in ("build", "pull", "push")
