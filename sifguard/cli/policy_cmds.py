"""`sifguard policy check` and `sifguard verify --policy`: argument handling and output."""

from __future__ import annotations

import os
import sys

from sifguard.cli.common import ProgressBar, print_json
from sifguard.errors import RefusedError


def add_parsers(sub) -> None:
    p = sub.add_parser("policy", help="site policy tools")
    ps = p.add_subparsers(dest="policy_command", metavar="POLICY_COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    c = ps.add_parser("check", help="validate a policy file and print a summary")
    c.add_argument("file")
    c.set_defaults(func=cmd_check)
    # `verify --policy` flags join the verify parser defined in image_cmds
    v = sub.choices["verify"]
    v.add_argument("--policy", metavar="FILE", help="decide with the site policy (roots, rules, revocation, audit)")
    v.add_argument("--user", help="job user (default: you)")
    v.add_argument("--group", dest="unix_group", metavar="GROUP", help="job Unix group (default: your primary group)")
    v.add_argument("--account", help="job account")
    v.add_argument("--partition", help="job partition")


def cmd_check(args) -> int:
    from sifguard.enforce.decide import Engine, load_certs
    from sifguard.policy import levels
    from sifguard.policy.loader import load
    from sifguard.policy.model import DEFAULT_RULE
    pol = load(args.file)
    eng = Engine(pol)     # loads the roots: a missing root file is an error here too
    tsa = load_certs(pol.tsa_roots)
    r = pol.revocation
    print(f"{args.file}: valid (version {pol.version})")
    print(f"  trust roots: {len(eng.roots)} certificate(s) from {', '.join(pol.roots)}")
    for c in eng.roots:
        print(f"    {c.subject.rfc4514_string()} (until {c.not_valid_after_utc:%Y-%m-%d})")
    if pol.tsa_roots:
        print(f"  TSA roots: {len(tsa)} certificate(s) from {', '.join(pol.tsa_roots)}")
        for c in tsa:
            print(f"    {c.subject.rfc4514_string()} (until {c.not_valid_after_utc:%Y-%m-%d})")
    else:
        print("  TSA roots: the trust roots (trust.tsa_roots not set)")
    if pol.signer_sets:
        print("  signer sets: " + ", ".join(f"{n} ({len(p)} pattern(s))" for n, p in pol.signer_sets))
    print(f"  revocation: mode {r.mode}, timeout {r.timeout:g} s, retries {r.retries}, "
          f"CRL fallback {'on' if r.crl_fallback else 'off'}, cache {r.cache_dir}"
          + (f" + shared {r.shared_cache_dir}" if r.shared_cache_dir else "")
          + (f", {len(r.responders)} responder override(s)" if r.responders else ""))
    print(f"  audit log: {pol.audit_log or 'none'}; verified-image cache: {pol.image_cache or 'off'}")
    print(f"  runtime sources allowed: {', '.join(pol.runtime.allow_sources)}")
    print("  rules (first match wins):")
    for i, rule in enumerate(pol.rules, 1):
        m = rule.match
        cond = ", ".join(f"{k} {'|'.join(getattr(m, k))}" for k in ("path", "user", "group", "account", "partition")
                         if getattr(m, k)) or "everything"
        print(f"    {i}. {rule.name} (line {rule.line}): {cond} -> {rule.action}, require {_require(rule)}")
        if rule.require != "any":
            print(f"       verification {levels.describe(rule.verification)}")
    print(f"    *. default (built-in): everything else -> enforce, require signed\n"
          f"       verification {levels.describe(DEFAULT_RULE.verification)}")
    if any(r.verification.overrides for r in pol.rules if r.require != "any"):
        print("  (* an action the rule's verification.override sets)")
    for w in _never_matching_paths(pol) + _unused_signer_sets(pol):
        print(f"sifguard: warning: {args.file}: {w}", file=sys.stderr)
    return 0


def _require(rule) -> str:
    """`signed`, `any`, or the quorum, with the rule's own signer patterns and revocation mode."""
    out = rule.require
    q = rule.quorum
    if q is not None:
        out = f"{q.count} of [{', '.join(q.slots)}] (distinct signers)"
    if rule.signers:
        out += f", signers: {len(rule.signers)} pattern(s)" + (" (every quorum signer must match one)" if q else "")
    if rule.revocation_mode:
        out += f", revocation {rule.revocation_mode}"
    return out


def _unused_signer_sets(pol) -> list[str]:
    used = {s for r in pol.rules if r.quorum for s in r.quorum.slots}
    return [f"signer set '{n}' is used by no rule" for n, _ in pol.signer_sets if n not in used]


def _never_matching_paths(pol) -> list[str]:
    """Path globs without a wildcard that name an existing directory: they match only that
    directory itself, never an image in it (the rule would silently not apply)."""
    from sifguard.policy import globs
    out = []
    for rule in pol.rules:
        for g in rule.match.path:
            try:
                toks = globs.compile_path(g).tokens
            except globs.GlobError:
                continue
            if all(t[0] == globs.LIT for t in toks) and os.path.isdir(g):
                out.append(f"rule '{rule.name}' (line {rule.line}): path '{g}' is a directory and matches no "
                           f"image in it (did you mean '{g.rstrip('/')}/**'?)")
    return out


def context_from_args(args):
    from sifguard.policy.decide import JobContext
    from sifguard.slurm.context import group_name, user_name
    user = args.user if args.user is not None else user_name(os.getuid())
    group = args.unix_group if args.unix_group is not None else group_name(os.getgid())
    return JobContext(user=user, group=group, account=args.account, partition=args.partition,
                      job_id=os.environ.get("SLURM_JOB_ID"))


def verify_with_policy(args) -> int:
    from sifguard.enforce.decide import Engine
    from sifguard.policy.loader import load
    if args.key or args.roots or args.cert or args.intermediates:
        from sifguard.errors import BadInputError
        raise BadInputError("--policy takes its trust from the policy file; drop --key/--roots/--cert/--intermediates")
    eng = Engine(load(args.policy))
    bar = ProgressBar(args.image, "verifying")
    v = eng.decide(args.image, context_from_args(args), progress=bar)
    bar.finish()
    if eng.last_audit_error:
        print(f"sifguard: warning: {eng.last_audit_error}", file=sys.stderr)
    if args.json:
        print_json(v.as_dict())
    else:
        print(f"{v.image}: {v.decision.upper()} (rule '{v.rule}', action {v.action}, "
              f"revocation {v.revocation_source or 'n/a'}, image cache {v.image_cache}) — {v.reason}")
        for s in v.signers:
            t = s.get("time") or {}
            if t.get("basis") == "timestamp":
                print(f"  {s['subject']}: judged at genTime {t['gen_time']} (time-stamped by {t['tsa']})")
            elif t:
                print(f"  {s['subject']}: judged now ({t.get('why', '')})")
        for c, action, result, why in v.checks:
            if result == "fail" or action not in ("enforce", "optional"):
                print(f"  check {c} ({action}): {result}" + (f" — {why}" if why and result == "fail" else ""))
    if not v.allowed:
        raise RefusedError(f"{args.image}: refused by rule '{v.rule}': {v.reason}")
    return 0
