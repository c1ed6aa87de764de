"""`sifguard slurm …`: install the Slurm hooks (argument handling and output only)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    p = sub.add_parser("slurm", help="Slurm enforcement: install the hooks, check the setup")
    ss = p.add_subparsers(dest="slurm_command", metavar="SLURM_COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    i = ss.add_parser("install", help="install prolog, task prolog, shim and SPANK plugin; print the Slurm lines")
    i.add_argument("--prefix", required=True, help="directory for the hooks, e.g. /usr/libexec/sifguard")
    i.add_argument("--policy", required=True, help="site policy file the hooks use")
    i.add_argument("--slurm-conf", default="/etc/slurm/slurm.conf")
    i.add_argument("--apptainer", default="/usr/bin/apptainer", help="the real apptainer binary")
    i.add_argument("--singularity", default="/usr/bin/singularity", help="the real singularity binary")
    i.add_argument("--state-dir", default="", help="slurmctld StateSaveLocation (to read job environments)")
    i.add_argument("--python", help="interpreter for the hooks (default: this one); must be usable by job users")
    i.add_argument("--no-spank", action="store_true", help="do not build the SPANK plugin")
    i.add_argument("--singularity-flavor", choices=("apptainer", "singularityce"),
                   help="whose command line `singularity` is (default: apptainer when it links to apptainer)")
    i.add_argument("--seal-limit", type=_size, help="largest image the shim pins in a sealed in-memory copy "
                   "where no image store serves (default 1G; larger ones are refused)")
    i.add_argument("--store", default="", help="the verified image store directory (e.g. /var/lib/sifguard/store): "
                   "tasks run its verified copies instead of each making a sealed copy")
    i.add_argument("--stager-socket", default="", help="the stager's socket (`sifguard store serve --socket`)")
    i.set_defaults(func=cmd_install)
    pc = ss.add_parser("precheck",
                       help="at submission: what the start-time gate will say about a job's images (cli_filter)")
    from sifguard.slurm.precheck import add_arguments
    add_arguments(pc)
    pc.set_defaults(func=cmd_precheck)
    d = ss.add_parser("doctor", help="check this controller/node's sifguard Slurm setup; a fix for each failure")
    d.add_argument("--prefix", help="where the hooks are installed (default: the installed configuration's)")
    d.add_argument("--slurm-conf", help="slurm.conf (default: the one `slurm install` recorded)")
    d.add_argument("--policy", help="site policy (default: the one `slurm install` recorded)")
    d.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    d.add_argument("--timeout", type=_seconds, help="seconds per network/child check (default: the policy's "
                   "revocation.timeout)")
    d.set_defaults(func=cmd_doctor)


def _size(text: str) -> int:
    import argparse
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        n = int(float(num) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 8G)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return n


def _seconds(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 600:
        raise argparse.ArgumentTypeError(f"not a number of seconds in (0, 600]: {text!r}")
    return v


def cmd_doctor(args) -> int:
    from sifguard.cli.common import print_json
    from sifguard.slurm import doctor
    setup = doctor.locate(args.prefix, args.slurm_conf, args.policy, args.timeout)
    checks = doctor.run(setup)
    if args.json:
        print_json(doctor.as_json(setup, checks))
    else:
        print(doctor.render(checks))
    return 1 if any(c.status == doctor.FAIL for c in checks) else 0


def cmd_install(args) -> int:
    from sifguard.policy.loader import load
    from sifguard.slurm.install import install
    load(args.policy)   # refuse to install hooks over a policy that does not load
    if args.stager_socket and not args.store:
        from sifguard.errors import BadInputError
        raise BadInputError("--stager-socket needs --store (the directory the stager serves)")
    out = install(args.prefix, args.policy, args.slurm_conf, args.apptainer, args.singularity,
                  args.state_dir, args.python, not args.no_spank, args.singularity_flavor, args.seal_limit,
                  store=args.store, stager_socket=args.stager_socket)
    print(f"installed sifguard Slurm hooks in {args.prefix} (configuration {out['config']})")
    print("# slurm.conf:")
    for line in out["slurm.conf"]:
        print(line)
    print("# plugstack.conf:")
    for line in out["plugstack.conf"]:
        print(line)
    print("# slurm.conf, submit-time feedback (optional; the prolog stays authoritative):")
    for line in out["cli_filter"]:
        print(line)
    return 0


def cmd_precheck(args) -> int:
    from sifguard.slurm.precheck import run
    return run(args)
