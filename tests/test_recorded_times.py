"""Trusted times kept in a findings record (image cache, store): a warm decision reuses a
token that counted instead of parsing and re-verifying it (asn1crypto's import alone is
~25 ms a process), with the verdict a fresh verification gives. Tokens that did not count
are verified again (their refusal may be the path search's bounds or the clock); a record
kept under other rules (token rules version, intermediates, limits) or damaged means
verifying again; a kept time the clock now puts in the future is verified again.
Tokens are real: `openssl ts -reply` (tests/tsa_peers.py) and the TSA core behind `ca serve`."""
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import pytest

from test_timestamps import site, tsa  # noqa: F401 - the time-stamp tests' fixtures
from tsa_peers import tsa_cert

from sifguard.enforce import decide as D
from sifguard.enforce.decide import Engine
from sifguard.integrity import verify as V
from sifguard.integrity.sign import Signer, sign_image
from sifguard.policy.loader import load
from sifguard.tsp import token as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _policy(tmp_path, site):
    p = tmp_path / "policy.yaml"
    p.write_text(f"version: 1\ntrust: {{roots: [{site.root_pem}]}}\nrevocation: {{mode: off}}\n"
                 f"cache: {{images: {tmp_path / 'img'}}}\n")
    return str(p)


def _signed(copy_vector, site, stamp, name="s.sif"):
    p = copy_vector("apptainer/images/one-group.sif", name)
    sign_image(p, [Signer(site.leaf_key, (site.leaf, site.inter))], stamp=stamp)
    return p


def _times(v):
    return [s.get("time") for s in v.signers]


def test_trusted_time_round_trips_exactly(site, tsa):
    tt = T.verify(T.parse(tsa.token(b"sig")), b"sig", [site.root])
    back = T.TrustedTime.from_record(json.loads(json.dumps(tt.as_record())))
    assert back == tt and back.gen_time.tzinfo is not None
    for bad in ({**tt.as_record(), "gen_time_us": "1"}, {**tt.as_record(), "accuracy_us": -1},
                {**tt.as_record(), "tsa_path": []}, {**tt.as_record(), "tsa_path": ["!!"]},
                {**tt.as_record(), "serial": "zz"}, {k: v for k, v in tt.as_record().items() if k != "policy"}):
        with pytest.raises((ValueError, TypeError, KeyError)):
            T.TrustedTime.from_record(bad)


def _rec(eng, img):
    from sifguard.sif.image import SifImage
    with SifImage(img) as f:
        return f.stat, eng.image_cache.get(f.stat)


def test_hit_reuses_verdicts_and_decides_alike(tmp_path, site, tsa, copy_vector):
    good = _signed(copy_vector, site, tsa.token, "good.sif")
    moved = _signed(copy_vector, site, lambda sig: tsa.token(b"another" + sig), "moved.sif")
    eng = Engine(load(_policy(tmp_path, site)))
    for img in (good, moved):
        miss = eng.decide(img, log=False)
        assert miss.image_cache == "miss" and miss.allowed, miss.reason
        hit = Engine(load(_policy(tmp_path, site))).decide(img, log=False)
        assert hit.image_cache == "hit"
        assert _times(hit) == _times(miss) and hit.reason == miss.reason
    import base64
    # what the records hold: the token that counted, keyed by its SHA-256, under this trust
    (sig,) = _rec(eng, good)[1]["groups"]["1"]
    (tok,) = sig["tokens"]
    assert sig["times"]["id"] == eng.times_id
    assert list(sig["times"]["valid"]) == [hashlib.sha256(base64.b64decode(tok)).hexdigest()]
    (sig,) = _rec(eng, moved)[1]["groups"]["1"]          # over another signature: not kept
    assert sig["times"]["valid"] == {}


def test_kept_under_other_rules_means_verify_again(tmp_path, site, tsa, copy_vector, monkeypatch):
    """Another intermediates list, other path limits or another token-rules version: the kept
    times are not used."""
    img = _signed(copy_vector, site, tsa.token)
    eng = Engine(load(_policy(tmp_path, site)))
    eng.decide(img, log=False)
    times = _rec(eng, img)[1]["groups"]["1"][0]["times"]
    assert D._times_from_record(times, eng.times_id) is not None
    other = V.Trust(roots=eng.trust.roots, intermediates=(site.inter,), tsa_roots=eng.trust.tsa_roots)
    assert D.times_id(other) != eng.times_id and D._times_from_record(times, D.times_id(other)) is None
    from sifguard.x509.chain import PathLimits
    tighter = V.Trust(roots=eng.trust.roots, limits=PathLimits(max_depth=2))
    assert D.times_id(tighter) != eng.times_id
    monkeypatch.setattr(D, "TOKEN_RULES", b"sifguard-token-rules-2")
    assert D.times_id(eng.trust) != eng.times_id


def test_hit_neither_imports_asn1crypto_nor_parses(tmp_path, site, tsa, copy_vector):
    """A fresh process, as each task's hook is: the warm decision of a time-stamped image
    names genTime without importing asn1crypto."""
    img = _signed(copy_vector, site, tsa.token)
    pol = _policy(tmp_path, site)
    assert Engine(load(pol)).decide(img, log=False).image_cache == "miss"
    code = ("import sys; from sifguard.enforce.decide import Engine; from sifguard.policy.loader import load; "
            "v = Engine(load(sys.argv[1])).decide(sys.argv[2], log=False); "
            "print(v.image_cache, v.allowed, v.signers[0]['time']['basis'], 'asn1crypto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, pol, img], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.stdout.split() == ["hit", "True", "timestamp", "False"], out


def test_damaged_record_verifies_tokens_again(tmp_path, site, tsa, copy_vector, monkeypatch):
    img = _signed(copy_vector, site, tsa.token)
    eng = Engine(load(_policy(tmp_path, site)))
    fresh = eng.decide(img, log=False)
    tid = eng.times_id
    good = T.verify(T.parse(tsa.token(b"sig")), b"sig", [site.root]).as_record()
    assert D._times_from_record({"id": tid, "valid": {"x": good}}, tid) is not None
    for damage in ({"x": {"gen_time_us": "late"}}, ["not", "a", "dict"], {"x": {"tsa_path": "AAAA"}}, None, {},
                   {"x": {**good, "gen_time_us": 10 ** 30}}, {"x": {**good, "gen_time_us": -1}},
                   {"x": {**good, "gen_time_us": (dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc) - T.EPOCH)
                          // dt.timedelta(microseconds=1), "accuracy_us": 10 ** 6}},
                   {"x": {**good, "tsa_path": ["MAA="]}}, {"x": {**good, "tsa_path": ["AAAA" * 10]}},
                   {"x": "a reason"}, {1: good}):
        assert D._times_from_record({"id": tid, "valid": damage}, tid) is None, damage
    assert D._times_from_record({"valid": {"x": good}}, tid) is None              # no id
    parsed = []
    real_parse = T.parse
    monkeypatch.setattr(T, "parse", lambda der: parsed.append(1) or real_parse(der))
    st, rec = _rec(eng, img)
    rec["groups"]["1"][0]["times"] = {"id": tid, "valid": {"x": {"gen_time_us": "late"}}}
    eng.image_cache.put(st, rec)
    again = Engine(load(_policy(tmp_path, site))).decide(img, log=False)
    assert again.image_cache == "hit" and parsed == [1] and _times(again) == _times(fresh)


def test_a_kept_time_the_clock_puts_in_the_future_is_verified_again(tmp_path, site, tsa):
    """Kept while the host's clock ran ahead (or written wrong): the token is verified again
    and the clock's verdict stands."""
    from sifguard.integrity import dsse
    from sifguard.x509.chain import SignatureMemo
    der = tsa.token(b"sig")
    tt = T.verify(T.parse(der), b"sig", [site.root])
    ahead = T.TrustedTime(tt.gen_time + dt.timedelta(days=3), tt.accuracy, tt.policy, tt.serial, tt.tsa_path)
    res = V.SignatureResult(0, 0, 0, "dsse", V.UNTRUSTED, "")
    got = V._timestamps(dsse.EnvelopeSignature("", b"sig", (), (der,)), V.Trust(roots=(site.root,)), res,
                        SignatureMemo(), {}, {hashlib.sha256(der).hexdigest(): ahead})
    assert got == tt and res.timestamps[0]["status"] == "valid"          # the real token's time, not the kept one


def test_only_tokens_that_count_are_kept(tmp_path, site):
    """A token dated beyond the clock's skew, or over another signature, does not count:
    neither is kept (the next decision verifies them again)."""
    from sifguard.tsp import request as R
    from sifguard.tsp.authority import Authority
    from pki import new_key
    k = new_key()
    cert = tsa_cert(k, site.int_key, site.inter, days=400)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    q = R.request(b"sig")
    future = R.read_reply(Authority(cert, k, (cert, site.inter), "1.2.3.4").respond(q.der, later, 7), q)
    q2 = R.request(b"other")
    elsewhere = R.read_reply(Authority(cert, k, (cert, site.inter), "1.2.3.4").respond(
        q2.der, dt.datetime.now(dt.timezone.utc), 8), q2)
    res = V.SignatureResult(0, 0, 0, "dsse", V.UNTRUSTED, "")
    from sifguard.integrity import dsse
    from sifguard.x509.chain import SignatureMemo
    got = V._timestamps(dsse.EnvelopeSignature("", b"sig", (), (future, elsewhere)), V.Trust(roots=(site.root,)),
                        res, SignatureMemo(), {})
    assert got is None and [t["status"] for t in res.timestamps] == ["invalid", "invalid"]
    assert "in the future" in res.timestamps[0]["reason"]
    assert res.token_verdicts == {}
