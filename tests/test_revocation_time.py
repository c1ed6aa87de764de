"""The decision core on revocation × signing time, table-driven (enforce/core.py is pure:
findings and revocation answers in, a verdict out). Certificates are real (cryptography's
builders); the answers are the duck-typed objects the core documents. The same matrix runs
end to end against `sifguard ca serve` (OCSP and CRL) in tests/test_lifecycle.py."""
import datetime as dt

import pytest

from answers import answer
from pki import SiteChain

from sifguard.enforce import core
from sifguard.enforce.decide import _signer
from sifguard.policy.model import Rule, Verification
from sifguard.tsp.token import TrustedTime
from sifguard.x509.chain import build_path

NOW = dt.datetime.now(dt.timezone.utc)
REASONS = ["unspecified", None, "keyCompromise", "cACompromise", "aACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold", "privilegeWithdrawn"]
BENIGN = {"affiliationChanged", "superseded", "cessationOfOperation", "certificateHold", "privilegeWithdrawn"}


Answer = answer


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    signer = SiteChain(d, cn="signer")
    tsa = SiteChain(d, cn="tsa")
    return signer, tsa


def findings(signer_chain, signed_at):
    path = build_path(signer_chain.leaf, [signer_chain.inter], [signer_chain.root])
    s = _signer(1, path)
    s = core.Signer(**{**s.__dict__, "signed_at": signed_at})
    return core.Findings(True, groups=((1, (s,), ()),))


def stamp(tsa_chain, at):
    return TrustedTime(at, dt.timedelta(seconds=1), "1.2.3", 7, (tsa_chain.leaf, tsa_chain.inter, tsa_chain.root))


def decide(f, answers):
    def lookup(cert, issuer, links_left=1):
        return answers.get(cert.serial_number, Answer("good"))
    return core.decide((Rule(name="r"),), "/img.sif", f, lookup, "enforce")


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("when", ["before", "after", "none"])
@pytest.mark.parametrize("invalidity", [None, "before-signing", "after-signing"])
def test_signer_revocation_matrix(chains, reason, when, invalidity):
    signer, tsa = chains
    gen = NOW - dt.timedelta(days=2)
    signed_at = None if when == "none" else stamp(tsa, gen)
    revoked_at = (gen + dt.timedelta(days=1) if when != "after" else gen - dt.timedelta(days=1)).timestamp()
    inv = {None: None, "before-signing": (gen - dt.timedelta(hours=1)).timestamp(),
           "after-signing": (gen + dt.timedelta(hours=1)).timestamp()}[invalidity]
    ans = Answer("revoked", reason=f"revoked ({reason})", revoked_at=revoked_at, revocation_reason=reason,
                 invalidity_date=inv, subject=signer.leaf.subject.rfc4514_string())
    v = decide(findings(signer, signed_at), {signer.leaf.serial_number: ans})
    # the signature stands only with a token, a benign reason, the revocation after the
    # signing time, and no invalidity date at or before it
    stands = when == "before" and reason in BENIGN and invalidity != "before-signing"
    # "when=before" means the signing happened before the revocation
    assert v.allowed is stands, (reason, when, invalidity, v.reason)
    if stands:
        mine = next(r for r in v.revocation if r.get("role") != "tsa")
        assert mine["spared"] and "the signature stands" in mine["reason"]
        assert any(r.get("role") == "tsa" for r in v.revocation)     # the TSA was asked about too
    else:
        assert "revoked" in v.reason


def test_revoked_intermediate_spares_like_a_leaf(chains):
    signer, tsa = chains
    gen = NOW - dt.timedelta(days=2)
    later = (gen + dt.timedelta(days=1)).timestamp()
    for reason, ok in (("superseded", True), ("cACompromise", False), ("keyCompromise", False)):
        ans = Answer("revoked", revoked_at=later, revocation_reason=reason, subject="CN=Site Issuing CA")
        v = decide(findings(signer, stamp(tsa, gen)), {signer.inter.serial_number: ans})
        assert v.allowed is ok, (reason, v.reason)


@pytest.mark.parametrize("reason,tsa_revoked,allowed", [
    ("keyCompromise", "after", False),          # a compromised TSA key could have dated anything
    ("superseded", "after", True),              # retired after it made the token: the token stands
    ("superseded", "before", False),            # the token was made after the TSA was revoked
    ("cessationOfOperation", "after", True),
])
def test_tsa_revocation_voids_or_keeps_the_token(chains, reason, tsa_revoked, allowed):
    """The signer's own certificate was revoked (superseded) after signing: only a token that
    still counts can spare it; a void token leaves the signature judged at now = revoked."""
    signer, tsa = chains
    gen = NOW - dt.timedelta(days=2)
    t = (gen + dt.timedelta(days=1) if tsa_revoked == "after" else gen - dt.timedelta(days=1)).timestamp()
    answers = {
        signer.leaf.serial_number: Answer("revoked", revoked_at=(gen + dt.timedelta(hours=5)).timestamp(),
                                          revocation_reason="superseded"),
        tsa.leaf.serial_number: Answer("revoked", revoked_at=t, revocation_reason=reason, subject="CN=tsa",
                                       reason=f"revoked ({reason})"),
    }
    v = decide(findings(signer, stamp(tsa, gen)), answers)
    assert v.allowed is allowed, v.reason
    if not allowed:
        assert "revoked" in v.reason


def test_unknown_and_error_are_not_softened_by_a_token(chains):
    signer, tsa = chains
    f = findings(signer, stamp(tsa, NOW - dt.timedelta(days=1)))
    v = decide(f, {signer.leaf.serial_number: Answer("unknown")})
    assert not v.allowed and "unknown" in v.reason
    v = decide(f, {signer.leaf.serial_number: Answer("error", reason="down")})
    assert not v.allowed and "could not be established" in v.reason


def test_accuracy_counts_against_the_signer(chains):
    """A revocation inside the token's accuracy window does not spare the signature."""
    signer, tsa = chains
    gen = NOW - dt.timedelta(days=2)
    st = TrustedTime(gen, dt.timedelta(minutes=10), "1.2.3", 7, (tsa.leaf, tsa.inter, tsa.root))
    inside = (gen + dt.timedelta(minutes=5)).timestamp()
    outside = (gen + dt.timedelta(minutes=15)).timestamp()
    for t, ok in ((inside, False), (outside, True)):
        ans = Answer("revoked", revoked_at=t, revocation_reason="superseded")
        assert decide(findings(signer, st), {signer.leaf.serial_number: ans}).allowed is ok


@pytest.mark.parametrize("status,mode,expired,allowed", [
    ("unknown", "enforce", False, True),      # token void; the certificate is still valid now
    ("unknown", "enforce", True, False),      # token void; expired now
    ("error", "enforce", True, False),
    ("error", "soft-fail", True, True),       # soft-fail forgives an unreachable responder, logged
    ("unknown", "soft-fail", True, False),    # unknown is never forgiven
])
def test_tsa_status_not_established(tmp_path, status, mode, expired, allowed):
    start = NOW - dt.timedelta(days=10)
    signer = SiteChain(tmp_path, cn="s", start=start, days=5 if expired else 30)
    tsa = SiteChain(tmp_path, cn="t")
    path = [signer.leaf, signer.inter, signer.root]
    s = _signer(1, path)
    f = core.Findings(True, groups=((1, (core.Signer(**{**s.__dict__, "signed_at": stamp(tsa, start + dt.timedelta(days=1))}),), ()),))

    def lookup(cert, issuer, links_left=1):
        return Answer(status, reason="no answer") if cert == tsa.leaf else Answer("good")
    v = core.decide((Rule(name="r"),), "/i.sif", f, lookup, mode)
    assert v.allowed is allowed, v.reason


def test_a_second_tsa_stands_in_when_the_first_is_revoked(tmp_path):
    """Two tokens from two TSAs: the first TSA's key is compromised (its tokens void); the
    second token still dates the signature — also after the signer's certificate expired."""
    now = dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(minutes=50)
    signer = SiteChain(tmp_path, cn="s2", start=start, days=20 / 1440)     # expired 30 minutes ago
    tsa1, tsa2 = SiteChain(tmp_path, cn="tsa1"), SiteChain(tmp_path, cn="tsa2")
    t1, t2 = stamp(tsa1, start + dt.timedelta(minutes=5)), stamp(tsa2, start + dt.timedelta(minutes=10))
    base = _signer(1, [signer.leaf, signer.inter, signer.root])

    def verdict(times, compromised):
        s = core.Signer(**{**base.__dict__, "signed_at": times[0], "later_times": tuple(times[1:])})
        f = core.Findings(True, groups=((1, (s,), ()),))

        def lookup(cert, issuer, links_left=1):
            if cert in compromised:
                return Answer("revoked", reason="revoked (keyCompromise)", revoked_at=NOW.timestamp(),
                              revocation_reason="keyCompromise", subject=cert.subject.rfc4514_string())
            return Answer("good")
        return core.decide((Rule(name="r", verification=Verification(timestamp="required")),), "/i.sif", f,
                           lookup, "enforce")
    assert verdict([t1, t2], {tsa1.leaf}).allowed                      # the second token stands in
    assert not verdict([t1], {tsa1.leaf}).allowed                      # no other token: judged now, expired
    assert not verdict([t1, t2], {tsa1.leaf, tsa2.leaf}).allowed      # both TSAs compromised
    late = stamp(tsa2, start + dt.timedelta(minutes=40))               # after the signer expired
    assert not verdict([t1, late], {tsa1.leaf}).allowed
