"""Verification levels and N-of-M signers in the decision core, table-driven: every row is
a rule (level, overrides, timestamp requirement, quorum) over a group's signers (real
certificates from cryptography's builders: trusted, expired, untrusted, time-stamped,
revoked) → the decision and each check's result. The end-to-end form (policy YAML, CLI,
images) is at the bottom."""
import datetime as dt

import pytest

from answers import answer
from pki import SiteChain, cert, new_key

from sifguard.enforce import core
from sifguard.enforce.decide import _signer
from sifguard.policy.model import Quorum, Rule, SignerPattern, Verification
from sifguard.tsp.token import TrustedTime
from sifguard.x509.chain import identity

NOW = dt.datetime.now(dt.timezone.utc)


Answer = answer


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("lv")
    site = SiteChain(d, cn="site")
    k = {n: new_key() for n in ("b1", "b2", "sec", "old", "rev", "ts")}
    leaves = {
        "b1": cert(k["b1"], "builder-1", site.int_key, site.inter),
        "b2": cert(k["b2"], "builder-2", site.int_key, site.inter),
        "b1again": cert(k["b1"], "builder-1", site.int_key, site.inter),      # renewed: same key
        "sec": cert(k["sec"], "reviewer", site.int_key, site.inter, email="rev@sec.example.org"),
        "old": cert(k["old"], "builder-old", site.int_key, site.inter, start=NOW - dt.timedelta(days=60), days=30),
        "rev": cert(k["rev"], "builder-revoked", site.int_key, site.inter),
        "ts": cert(k["ts"], "builder-stamped", site.int_key, site.inter, start=NOW - dt.timedelta(days=60), days=30),
    }
    other = SiteChain(d, cn="elsewhere")
    tsa = SiteChain(d, cn="tsa")
    out = {}
    for n, leaf in leaves.items():
        path = [leaf, site.inter, site.root]
        s = _signer(1, path)
        if n in ("old", "ts"):
            signed_at = None
            if n == "ts":
                signed_at = TrustedTime(NOW - dt.timedelta(days=45), dt.timedelta(seconds=1), "1.2", 1,
                                        (tsa.leaf, tsa.inter, tsa.root))
            ok = signed_at is not None
            s = core.Signer(**{**s.__dict__, "expiry": (ok, "valid at genTime" if ok else
                                                        "certificate 'builder-old' expired"),
                               "signed_at": signed_at,
                               "time": (("basis", "timestamp" if ok else "now"),)})
        out[n] = s
    out["untrusted"] = core.Signer(1, (other.leaf,), identity(other.leaf), (), authentic=False,
                                   authenticity="certificate 'elsewhere' does not chain to a trusted root",
                                   expiry=(False, "not judged"))
    out["_revoked_serial"] = leaves["rev"].serial_number
    return out


SETS = (("builders", (SignerPattern(subject="CN=builder-*"),)),
        ("security", (SignerPattern(email="*@sec.example.org"),)))


def decide(pki, rule, names, revoked=False):
    group = tuple(pki[n] for n in names)
    f = core.Findings(any(s.valid for s in group), "group 1: no trusted signature (x)" if not any(s.valid for s in group) else "",
                      groups=((1, group, ()),))

    def lookup(c, issuer, links_left=1):
        if revoked and c.serial_number == pki["_revoked_serial"]:
            return Answer("revoked", reason="revoked (keyCompromise)", subject="CN=builder-revoked",
                          revoked_at=NOW.timestamp(), revocation_reason="keyCompromise")
        return Answer("good")
    return core.decide((rule,), "/apps/x.sif", f, lookup, "enforce", signer_sets=SETS)


def R(level="strict", overrides=(), timestamp="optional", quorum=None, **kw):
    return Rule(name="r", verification=Verification(level, tuple(overrides), timestamp), quorum=quorum, **kw)


TABLE = [
    # (rule, signers, revoked?, decision, {check: result})
    (R(), ["b1"], False, "allow", {"integrity": "pass", "authenticity": "pass", "expiry": "pass", "revocation": "pass"}),
    (R(), ["old"], False, "refuse", {"expiry": "fail"}),
    (R(), ["untrusted"], False, "refuse", {"authenticity": "fail"}),
    (R(), ["untrusted", "b1"], False, "allow", {"authenticity": "pass"}),        # unrelated signatures never break it
    (R(), ["rev"], True, "refuse", {"revocation": "fail"}),
    (R(), ["ts"], False, "allow", {"expiry": "pass", "timestamp": "pass"}),
    (R(timestamp="required"), ["b1"], False, "refuse", {"expiry": "fail", "timestamp": "fail"}),
    (R(timestamp="required"), ["ts"], False, "allow", {"timestamp": "pass"}),
    (R(timestamp="required"), ["b1", "ts"], False, "allow", {"timestamp": "pass"}),
    (R("permissive"), ["old"], False, "audit", {"expiry": "fail"}),
    (R("permissive"), ["rev"], True, "audit", {"revocation": "fail"}),
    (R("permissive"), ["untrusted"], False, "refuse", {"authenticity": "fail"}),
    (R("audit"), ["untrusted"], False, "audit", {"authenticity": "fail", "integrity": "pass"}),
    (R("audit"), ["b1"], False, "allow", {"authenticity": "pass"}),
    (R("skip"), ["untrusted"], False, "allow", {"integrity": "skipped", "authenticity": "skipped"}),
    (R("strict", [("expiry", "log")]), ["old"], False, "audit", {"expiry": "fail"}),
    (R("strict", [("revocation", "skip")]), ["rev"], True, "allow", {"revocation": "skipped"}),
    (R("strict", [("revocation", "log")]), ["rev"], True, "audit", {"revocation": "fail"}),
    (R("permissive", [("expiry", "enforce")]), ["old"], False, "refuse", {"expiry": "fail"}),
    (R("audit", [("authenticity", "enforce")]), ["untrusted"], False, "refuse", {"authenticity": "fail"}),
    # N-of-M
    (R(quorum=Quorum(2, ("builders", "security"))), ["b1", "sec"], False, "allow", {"authenticity": "pass"}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["b1", "b2"], False, "refuse", {"authenticity": "fail"}),
    (R(quorum=Quorum(2, ("builders", "builders"))), ["b1", "b2"], False, "allow", {"authenticity": "pass"}),
    (R(quorum=Quorum(2, ("builders", "builders"))), ["b1", "b1again"], False, "refuse", {"authenticity": "fail"}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["b1", "sec", "untrusted"], False, "allow", {}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["b1", "untrusted"], False, "refuse", {"authenticity": "fail"}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["old", "sec"], False, "refuse", {"expiry": "fail"}),
    (R("permissive", quorum=Quorum(2, ("builders", "security"))), ["old", "sec"], False, "audit", {"expiry": "fail"}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["rev", "sec"], True, "refuse", {"revocation": "fail"}),
    (R(quorum=Quorum(2, ("builders", "security"))), ["rev", "b2", "sec"], True, "allow", {"revocation": "pass"}),
    (R(quorum=Quorum(1, ("builders", "security"))), ["sec"], False, "allow", {}),
    (R(quorum=Quorum(2, ("builders", "security")), signers=(SignerPattern(subject="CN=builder-1"),
                                                              SignerPattern(email="*@sec.example.org"))),
     ["b2", "sec"], False, "refuse", {"authenticity": "fail"}),     # inline signers filter the quorum
    (R("strict", [("authenticity", "log")], quorum=Quorum(2, ("builders", "security"))), ["b1"], False, "audit",
     {"authenticity": "fail"}),
    # classic fields still work with levels
    (R(signers=(SignerPattern(subject="CN=builder-2"),)), ["b1"], False, "refuse", {"authenticity": "fail"}),
    (Rule(name="r", require="any"), ["untrusted"], False, "allow", {}),
    (Rule(name="r", action="audit"), ["untrusted"], False, "audit", {}),
]


@pytest.mark.parametrize("rule,names,revoked,decision,checks", TABLE,
                         ids=[f"{i}-{t[0].verification.level}-{'+'.join(t[1])}" for i, t in enumerate(TABLE)])
def test_levels_and_quorum_table(pki, rule, names, revoked, decision, checks):
    v = decide(pki, rule, names, revoked)
    assert v.decision == decision, v.reason
    got = {c: r for c, _, r, _ in v.checks}
    for c, want in checks.items():
        assert got.get(c) == want, (c, v.checks, v.reason)
    d = v.as_dict()
    if v.checks:
        assert set(d["checks"]) >= {"integrity", "authenticity", "expiry", "revocation"}


def test_quorum_reports_each_signer(pki):
    v = decide(pki, R(quorum=Quorum(2, ("builders", "security"))), ["b1", "sec"])
    assert {(s["subject"], s["fills"]) for s in v.signers} == {("CN=builder-1", "builders"),
                                                                ("CN=reviewer", "security")}
    v = decide(pki, R(quorum=Quorum(2, ("builders", "security"))), ["b1", "b2"])
    assert "needs 2 distinct signers of [builders, security]; 1 found (builders: CN=builder-1" in v.reason


def test_untrusted_chains_are_never_asked_about(pki):
    """Under a relaxed authenticity an untrusted signer may carry the image (audit), but no
    responder is asked about its chain: no issuer there can be believed, and its AIA is the
    image's choice (a stager running as root must not fetch it)."""
    asked = []
    s = pki["untrusted"]
    f = core.Findings(False, "x", groups=((1, (s,), ()),))

    def lookup(c, issuer, links_left=1):
        asked.append(c)
        return Answer("good")
    v = core.decide((R("audit"),), "/x.sif", f, lookup, "enforce")
    assert v.decision == "audit" and not asked
    assert dict((c, r) for c, _, r, _ in v.checks)["revocation"] == "fail"
