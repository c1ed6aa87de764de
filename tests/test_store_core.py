"""The store's pure parts: names and keys, how long a recorded decision lives, which
records are believed. (Staging, the stager and the hooks are in test_store.py.)"""
import dataclasses
import os
import time

import pytest

from pki import SiteChain
from sifguard.enforce import core
from sifguard.enforce.decide import Engine, _signer
from sifguard.store import keys, records
from sifguard.x509.chain import build_path


def _st(**kw):
    base = dict(st_dev=1, st_ino=2, st_size=3, st_mtime_ns=4, st_ctime_ns=5)
    base.update(kw)
    return type("St", (), base)()


def test_index_key_changes_with_every_identity_field_and_the_head():
    k = keys.index_key(_st(), b"head")
    for field, value in [("st_dev", 9), ("st_ino", 9), ("st_size", 9), ("st_mtime_ns", 9), ("st_ctime_ns", 9)]:
        assert keys.index_key(_st(**{field: value}), b"head") != k, field
    assert keys.index_key(_st(), b"heae") != k          # needs the bytes: `stat` alone is not enough


def test_decision_key_binds_content_policy_and_candidate_rules():
    d, p = "a" * 64, "b" * 64
    k = keys.decision_key(d, p, ("default",))
    assert keys.decision_key("c" * 64, p, ("default",)) != k
    assert keys.decision_key(d, "c" * 64, ("default",)) != k
    assert keys.decision_key(d, p, ("lenient",)) != k
    assert keys.decision_key(d, p, ("default", "lenient")) != k


def test_content_digest_covers_ranges_and_rest():
    objs = [(1, 4096, 10, "sha256:" + "0" * 64)]
    k = keys.content_digest(8192, b"r" * 32, objs)
    assert keys.content_digest(8193, b"r" * 32, objs) != k
    assert keys.content_digest(8192, b"s" * 32, objs) != k
    assert keys.content_digest(8192, b"r" * 32, [(1, 4097, 10, objs[0][3])]) != k    # same bytes, moved
    assert keys.content_digest(8192, b"r" * 32, [(2, 4096, 10, objs[0][3])]) != k


def test_policy_fingerprint_follows_the_trust_files(tmp_path):
    from sifguard.policy import model as m
    a = SiteChain(tmp_path, cn="alice")
    root = tmp_path / "root.pem"
    root.write_bytes(open(a.root_pem, "rb").read())
    pol = m.Policy("p.yaml", 1, roots=(str(root),))
    fp = keys.policy_fingerprint(pol)
    assert keys.policy_fingerprint(pol) == fp
    root.write_bytes(root.read_bytes() + b"\n")
    assert keys.policy_fingerprint(pol) != fp
    assert keys.policy_fingerprint(dataclasses.replace(pol, rules=(m.Rule("x"),))) != keys.policy_fingerprint(pol)
    # node-local settings do not change a decision: nodes share decisions across them
    moved = tmp_path / "elsewhere.pem"
    moved.write_bytes(root.read_bytes())
    local = dataclasses.replace(pol, path="/other/policy.yaml", roots=(str(moved),), audit_log="/x/audit.jsonl",
                                image_cache="/x/img", revocation=dataclasses.replace(
                                    pol.revocation, cache_dir="/x/c", shared_cache_dir="/shared/c"))
    assert keys.policy_fingerprint(local) == keys.policy_fingerprint(pol)
    assert keys.policy_fingerprint(dataclasses.replace(
        pol, revocation=dataclasses.replace(pol.revocation, mode="soft-fail"))) != keys.policy_fingerprint(pol)
    globbed = dataclasses.replace(pol, rules=(m.Rule("x", match=m.Match(path=("/a/*",))),))
    assert keys.policy_fingerprint(globbed) != keys.policy_fingerprint(
        dataclasses.replace(pol, rules=(m.Rule("x", match=m.Match(path=("/b/*",))),)))
    os.mkfifo(tmp_path / "fifo.pem")           # a FIFO among the roots never blocks the fingerprint
    with pytest.raises(OSError):
        keys.policy_fingerprint(m.Policy("p.yaml", 1, roots=(str(tmp_path / "fifo.pem"),)))


@pytest.fixture(scope="module")
def alice(tmp_path_factory):
    a = SiteChain(tmp_path_factory.mktemp("chain"), cn="alice")
    return _signer(1, build_path(a.leaf, [a.inter], [a.root]))


def _verdict(revocation=(), source="ocsp"):
    return core.Verdict("/x.sif", allowed=True, decision="allow", revocation=tuple(revocation),
                        revocation_source=source)


def test_recorded_decision_life_is_bounded(alice):
    f = core.Findings(True, groups=((1, (alice,), ()),))
    now = time.time()
    not_after = min(c.not_valid_after_utc.timestamp() for c in alice.path)
    assert Engine.valid_until(_verdict(), f, 300, now) == pytest.approx(now + 300)
    assert Engine.valid_until(_verdict(source="soft-fail"), f, 300, now) == pytest.approx(now + 30)
    soon = now + 42
    assert Engine.valid_until(_verdict([{"status": "good", "good_until": soon}]), f, 300, now) == pytest.approx(soon)
    assert Engine.valid_until(_verdict(), f, 10 ** 10, now) == pytest.approx(not_after)


def test_revocation_status_says_until_when_good(tmp_path):
    from sifguard.ocsp.client import Status
    assert "good_until" not in Status("error", "none", "x").as_dict()
    assert Status("good", "ocsp", "x", good_until=12.5).as_dict()["good_until"] == 12.5


def test_records_are_believed_only_from_root_and_unwritable_by_others(tmp_path):
    p = str(tmp_path / "r.json")
    records.write(p, {"a": 1})
    assert records.read(p) == {"a": 1} and os.stat(p).st_mode & 0o777 == 0o444
    os.chmod(p, 0o664)
    assert records.read(p) is None                       # group-writable
    os.chmod(p, 0o444)
    os.chown(p, 65534, 65534)
    assert records.read(p) is None                       # not root's
    os.chown(p, 0, 0)
    link = str(tmp_path / "link.json")
    os.symlink(p, link)
    assert records.read(link) is None                    # never through a symlink
    os.mkfifo(str(tmp_path / "fifo.json"))
    assert records.read(str(tmp_path / "fifo.json")) is None      # never blocks
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
