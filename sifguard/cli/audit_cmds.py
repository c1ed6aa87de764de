"""`sifguard audit report`: read the decision log back (argument handling and output only)."""

from __future__ import annotations

import os
import shutil
import sys
import time

from sifguard.errors import BadInputError

DEFAULT_POLICY = "/etc/sifguard/policy.yaml"


def add_parsers(sub) -> None:
    p = sub.add_parser("audit", help="read the audit log back: decisions, refusals and why")
    ss = p.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    r = ss.add_parser("report", help="totals by decision, refusals by reason/user/image/signer/rule, per day",
                      description="Read the JSON-lines audit log back. A hook that cannot write the file "
                                  "(the shim runs as the job's user) logs to syslog (identifier sifguard, "
                                  "authpriv) instead: --journal adds those records from journald, each "
                                  "checked against the uid journald saw send it.")
    r.add_argument("--log", action="append", metavar="FILE",
                   help="an audit log (JSON lines, plain or gzip); repeat for rotated files "
                        "(default: the policy's audit.log)")
    r.add_argument("--policy", metavar="FILE", help=f"site policy naming the audit log (default {DEFAULT_POLICY})")
    r.add_argument("--journal", action="store_true",
                   help="also read the records hooks logged to this machine's journal (journalctl)")
    r.add_argument("--journal-dir", metavar="DIR",
                   help="also read the records in the journal files under DIR (e.g. from systemd-journal-remote)")
    r.add_argument("--since", metavar="WHEN", help="only records at or after: 90m, 24h, 7d, 2w or ISO-8601")
    r.add_argument("--until", metavar="WHEN", help="only records before: a duration back from now or ISO-8601")
    r.add_argument("--top", type=int, default=10, metavar="N", help="rows per ranking (default 10)")
    r.add_argument("--json", action="store_true", help="one JSON object")
    r.set_defaults(func=cmd_report)


def log_paths(args) -> list[str]:
    if args.log:
        if args.policy:
            raise BadInputError("give --log or --policy, not both")
        return list(args.log)
    from sifguard.policy.loader import load
    path = args.policy or DEFAULT_POLICY
    pol = load(path)
    if not pol.audit_log:
        raise BadInputError(f"{path}: the policy names no audit log (audit: {{log: FILE}}); give --log FILE")
    return [pol.audit_log]


def cmd_report(args) -> int:
    from sifguard.audit import journal, reader, report, table
    from sifguard.audit.timespec import parse_when
    if not 1 <= args.top <= 10_000:
        raise BadInputError(f"--top must be between 1 and 10000, not {args.top}")
    now = time.time()
    since = parse_when(args.since, now, "--since") if args.since is not None else None
    until = parse_when(args.until, now, "--until") if args.until is not None else None
    if since is not None and until is not None and until <= since:
        raise BadInputError("--until must be later than --since")
    only_journal = (args.journal or args.journal_dir) and not (args.log or args.policy) and \
        not os.path.exists(DEFAULT_POLICY)      # e.g. a host collecting the nodes' journals
    paths = [] if only_journal else log_paths(args)
    for p in paths:                       # every file readable before any output
        reader.open_log(p).close()
    journals = ([None] if args.journal else []) + ([args.journal_dir] if args.journal_dir else [])
    if args.journal_dir is not None and not os.path.isdir(args.journal_dir):
        raise BadInputError(f"--journal-dir {args.journal_dir}: not a directory")
    if journals and os.geteuid() != 0:
        print("sifguard: warning: journal: unless you are in group adm or systemd-journal, journalctl shows "
              "only your own entries", file=sys.stderr)
    b = report.ReportBuilder(since, until, args.top)
    sources = []
    for p in paths:
        before = sum(b.lines.values())
        b.feed(reader.records(p))
        sources.append({"path": p, "lines": sum(b.lines.values()) - before})
    for d in journals:
        before = sum(b.lines.values())
        b.feed(journal.records(d, since, until))
        sources.append({"path": f"journal:{d}" if d else "journal", "lines": sum(b.lines.values()) - before})
    rep = b.result(sources)
    if args.json:
        from sifguard.cli.common import print_json
        print_json(rep)
    else:
        sys.stdout.write(table.render(rep, shutil.get_terminal_size((100, 24)).columns))
    return 0
