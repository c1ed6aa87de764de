"""The doctor's checks of what the hooks keep: the image store and its stager, the audit
log, the image and revocation caches."""

from __future__ import annotations

import os
import re

from sifguard.slurm import doctor_fs as F
from sifguard.slurm.doctor import FAIL, OK, SKIP, WARN, Check, Setup, problems_check as _problems_check, t as _t


def check_store(s: Setup) -> list[Check]:
    cfg = s.cfg
    if cfg is None or not cfg.store:
        return [Check("image store", SKIP, "no store configured (tasks use sealed in-memory copies)")]
    from sifguard.store.layout import Store, StoreError
    out = []
    try:
        Store(cfg.store).check_safe()
        out.append(Check("image store", OK, f"{cfg.store} is root's alone"))
    except StoreError as e:
        text = str(e)
        m = re.search(r"\(fix: (.*)\)\s*$", text)
        fix = m.group(1) if m else f"make {cfg.store} and the directories above it root's alone (chmod go-w)"
        out.append(Check("image store", FAIL, text[:m.start()].strip() if m else text, fix))
    if not cfg.stager_socket:
        out.append(Check("stager", SKIP, "no stager socket configured"))
        return out
    from sifguard.slurm import doctor_net as N
    ok, detail = N.ping_stager(cfg.stager_socket, _t(s))
    out.append(Check("stager", OK if ok else FAIL, detail, "" if ok else
                     f"start it: systemctl start sifguard-stager.socket, or `sifguard store serve --store {cfg.store} "
                     f"--socket {cfg.stager_socket}` as root"))
    return out


def _dir_check(name: str, d: str, what: str) -> Check:
    probe = d
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    problems = F.ancestor_problems(os.path.join(probe, "x"))
    if problems:
        return _problems_check(name, problems, "")
    if probe != d:
        return Check(name, OK, f"{d} does not exist yet; {what} creates it under {probe}")
    return Check(name, OK, f"{d} is root's alone")


def check_audit(s: Setup) -> list[Check]:
    pol = s.policy
    if pol is None:
        return []
    if not pol.audit_log:
        return [Check("audit log", WARN, "the policy sets no audit.log: decisions are recorded nowhere",
                      "set audit: {log: /var/log/sifguard/audit.jsonl} in the policy")]
    d = os.path.dirname(pol.audit_log)
    c = _dir_check("audit log", d, "the first root hook")
    if c.status != OK:
        return [Check("audit log", FAIL, c.detail + ": root hooks will not write there (records go to syslog)",
                      c.fix)]
    if os.path.lexists(pol.audit_log):
        problems = F.file_problems(pol.audit_log)
        if problems:
            return [_problems_check("audit log", problems, "")]
    if not s.is_root:
        return [Check("audit log", SKIP, f"{pol.audit_log}: whether root can write it needs root")]
    if os.path.isdir(d) and not os.access(d, os.W_OK):
        return [Check("audit log", FAIL, f"{d} is not writable (read-only file system?)", f"make {d} writable by root")]
    return [Check("audit log", OK, f"{pol.audit_log} ({c.detail})")]


def check_caches(s: Setup) -> list[Check]:
    pol = s.policy
    if pol is None:
        return []
    out = []
    for name, d in (("image cache", pol.image_cache), ("revocation cache", pol.revocation.cache_dir)):
        if not d:
            out.append(Check(name, SKIP, "not configured"))
            continue
        c = _dir_check(name, d, "the first root hook")
        if c.status == OK and os.path.isdir(d):
            st = os.stat(d)
            if st.st_uid != 0 or st.st_mode & 0o022:
                c = Check(name, FAIL, f"{d} is owned by uid {st.st_uid}, mode {st.st_mode & 0o7777:o}: the hooks "
                          "ignore it (every job step re-hashes / re-asks)", f"chown root:root {d}; chmod 0755 {d}")
        out.append(c if c.status == OK else Check(name, FAIL, c.detail + ": the hooks will not use it", c.fix))
    return out


