"""The doctor's checks of the policy and its trust: it loads, its files are root's alone and
readable by job users, its certificates are in date, its revocation endpoints answer."""

from __future__ import annotations

import datetime as dt
import json
import os

from sifguard.slurm import doctor_fs as F
from sifguard.slurm.doctor import EXPIRY_WARN_DAYS, FAIL, OK, SKIP, WARN, Check, Setup
from sifguard.slurm.doctor import problems_check as _problems_check
from sifguard.slurm.doctor import t as _t


def check_policy(s: Setup) -> list[Check]:
    from sifguard.policy import loader
    if not s.policy_path:
        return [Check("policy", SKIP, "no policy given and no installed configuration names one")]
    try:
        s.policy = loader.load(s.policy_path)
    except Exception as e:  # noqa: BLE001 - reported
        return [Check("policy", FAIL, str(e), f"fix the policy, check with `sifguard policy check {s.policy_path}`")]
    out = [_problems_check("policy", F.file_problems(s.policy_path, follow=True),
                           f"{s.policy_path} loads ({len(s.policy.rules)} rules)")]
    snap = s.policy_path + loader.COMPILED_SUFFIX
    if os.path.exists(snap):
        try:
            st, sst = os.stat(s.policy_path), os.stat(snap)
            with open(snap, encoding="utf-8") as f:
                d = json.load(f)
            if sst.st_uid not in (0, st.st_uid) or sst.st_mode & 0o022:
                out.append(Check("policy snapshot", FAIL, f"{snap} is not its owner's alone: the hooks ignore it",
                                 f"rm {snap} (a root hook writes a fresh one)"))
            elif d.get("compiled_version") != loader.COMPILED_VERSION or d.get("source") != loader._stat_key(st):
                out.append(Check("policy snapshot", WARN, f"{snap} is stale: the next root hook rewrites it; "
                                 "until then every hook parses the YAML"))
            else:
                loader._from_dict(d["policy"])
                out.append(Check("policy snapshot", OK, f"{snap} is current and valid"))
        except Exception as e:  # noqa: BLE001 - a snapshot the hooks would also ignore
            out.append(Check("policy snapshot", WARN, f"{snap} is unusable ({type(e).__name__}: {e}); the hooks "
                             "parse the YAML instead", f"rm {snap}"))
    return out


def _load_certs(path: str):
    from cryptography import x509
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = [x509.load_der_x509_certificate(data)]
    return certs


def trust_files(s: Setup) -> list[tuple[str, str]]:
    pol = s.policy
    if pol is None:
        return []
    return [("trust root", p) for p in pol.roots] + [("intermediate", p) for p in pol.intermediates] + \
        [("TSA root", p) for p in pol.tsa_roots]


def check_trust(s: Setup, now: dt.datetime | None = None) -> list[Check]:
    files = trust_files(s)
    if not files:
        return [Check("trust roots", SKIP, "no policy loaded")] if s.policy is None else []
    now = now or dt.datetime.now(dt.timezone.utc)
    probes = [("read", s.policy_path)] + [("read", p) for _, p in files]
    access = F.as_user(probes, _t(s)) if s.is_root else F.self_access(probes)
    who = "nobody" if s.is_root else f"uid {os.getuid()}"
    out = []
    err = access.get("read:" + s.policy_path, "")
    if err:
        out.append(Check("policy readable by users", FAIL, f"{who} cannot read {s.policy_path} ({err}): the shim, "
                         "running as the job's user, refuses every container",
                         f"chmod a+r {s.policy_path} and a+x on the directories above it"))
    else:
        out.append(Check("policy readable by users", OK, f"{who} can read {s.policy_path}"))
    for kind, path in files:
        name = f"{kind} {path}"
        problems = F.file_problems(path, follow=True)
        if problems:
            out.append(_problems_check(name, problems, ""))
            continue
        err = access.get("read:" + path, "")
        if err:
            out.append(Check(name, FAIL, f"{who} cannot read it ({err}): the shim runs as the job's user and "
                             "refuses every container", f"chmod a+r {path} and a+x on the directories above it"))
            continue
        try:
            certs = _load_certs(path)
        except OSError as e:
            out.append(Check(name, FAIL, f"cannot read it{' as root' if s.is_root else ''}: {e.strerror}",
                             f"make {path} readable (root-squashed NFS? keep trust files on local disk)"))
            continue
        except ValueError as e:
            out.append(Check(name, FAIL, f"not a certificate file: {e}",
                             f"replace {path} with the PEM certificate(s)"))
            continue
        worst, notes, fixes = OK, [], []
        for c in certs:
            cn = c.subject.rfc4514_string()
            left = c.not_valid_after_utc - now
            if c.not_valid_before_utc > now:
                worst = FAIL
                notes.append(f"{cn} is not valid before {c.not_valid_before_utc:%Y-%m-%d}")
                fixes.append(f"check the clock, or replace {path}")
            elif left.total_seconds() <= 0:
                worst = FAIL
                notes.append(f"{cn} EXPIRED {c.not_valid_after_utc:%Y-%m-%d}")
                fixes.append(f"put the renewed certificate in {path} (images signed under it are refused)")
            elif left < dt.timedelta(days=EXPIRY_WARN_DAYS):
                worst = worst if worst == FAIL else WARN
                notes.append(f"{cn} expires in {left.days} days ({c.not_valid_after_utc:%Y-%m-%d})")
            else:
                notes.append(f"{cn} until {c.not_valid_after_utc:%Y-%m-%d}")
        out.append(Check(name, worst, "; ".join(notes), "; ".join(dict.fromkeys(fixes))))
    return out


def check_revocation(s: Setup) -> list[Check]:
    if s.policy is None:
        return []
    from sifguard.ocsp.client import Checker
    from sifguard.slurm import doctor_net as N
    certs = []
    for _, path in trust_files(s):
        try:
            certs += _load_certs(path)
        except (OSError, ValueError):
            pass
    checker = Checker(s.policy.revocation)
    probes = N.probes(checker, certs)
    if not probes:
        return [Check("revocation endpoints", SKIP, "the trust files name no OCSP/CRL endpoint and the policy no "
                      "responder override (list the issuing CA under trust.intermediates to have it probed)")]
    modes = {s.policy.revocation.mode} | {r.revocation_mode for r in s.policy.rules if r.revocation_mode}
    if modes == {"off"}:
        return [Check("revocation endpoints", SKIP, "revocation checking is off in every rule of the policy")]
    checker.fetcher.session          # the HTTP stack is loaded before the clock starts: latency is the exchange's
    out = []
    for p in probes:
        ok, detail = N.run_probe(checker, p, _t(s))
        fix = "" if ok else (f"start or repair the responder at {p.url} (e.g. `sifguard ca serve`), or fix the "
                             f"policy's revocation.responders; within {_t(s):g} s it must answer, or every "
                             f"decision needing it refuses (mode {s.policy.revocation.mode})")
        out.append(Check(f"{p.kind.upper()} {p.url}", OK if ok else FAIL, f"{p.label}: {detail}", fix))
    return out


