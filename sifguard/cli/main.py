"""The `sifguard` command: parse, dispatch, map typed errors to exit codes."""

from __future__ import annotations

import sys

from sifguard import __version__
from sifguard.cli.common import Parser
from sifguard.errors import SifguardError


def build_parser() -> Parser:
    p = Parser(prog="sifguard", description="PKI trust for Singularity/Apptainer SIF images.")
    p.add_argument("--version", action="version", version=f"sifguard {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    from sifguard.cli import demo, image_cmds
    image_cmds.add_parsers(sub)
    demo.add_parsers(sub)
    for name in ("ca_cmds", "policy_cmds", "slurm_cmds", "store_cmds", "audit_cmds"):
        try:
            mod = __import__(f"sifguard.cli.{name}", fromlist=["add_parsers"])
        except ModuleNotFoundError as e:
            if e.name != f"sifguard.cli.{name}":
                raise
            continue
        mod.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args) or 0
    except SifguardError as e:
        print(f"sifguard: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sifguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # fail closed, in one line: never a traceback, never exit 0
        print(f"sifguard: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
