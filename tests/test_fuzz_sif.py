"""Property-based fuzzing of the SIF parser and verifier (hypothesis).

Random and mutated headers and descriptor tables must only ever raise the module's
own SifFormatError — never another exception — and no allocation may be sized by an
unchecked field (MAX_DESCRIPTORS and the file-size bounds are checked first).
"""
import os
import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SYLABS
from sifguard.errors import SifFormatError
from sifguard.integrity.verify import Trust, verify_image
from sifguard.sif.image import SifImage
from sifguard.x509.keys import load_public_key

BASE = open(os.path.join(SYLABS, "two-groups-signed-dsse.sif"), "rb").read()[:40000]
KEY = load_public_key(os.path.join(SYLABS, "ed25519-public.pem"))
HEADER_FIELDS = [64, 72, 80, 88, 96, 104, 112, 120]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(tmp_path, data: bytes):
    p = tmp_path / "f.sif"
    p.write_bytes(data)
    try:
        with SifImage(str(p)) as img:
            for d in img.objects:
                if d.size < 1 << 20:
                    img.read_object(d)
            verify_image(img, Trust(keys=(KEY,)))
    except SifFormatError:
        pass


@FUZZ
@given(data=st.binary(min_size=0, max_size=5000))
def test_random_bytes(tmp_path, data):
    _load(tmp_path, data)


@FUZZ
@given(field=st.sampled_from(HEADER_FIELDS),
       value=st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.sampled_from([0, -1, 1, 585, 4096, 2 ** 62])))
def test_mutated_header_fields(tmp_path, field, value):
    b = bytearray(BASE)
    struct.pack_into("<q", b, field, value)
    _load(tmp_path, bytes(b))


@FUZZ
@given(slot=st.integers(0, 6), off=st.integers(0, 584), value=st.integers(0, 255))
def test_mutated_descriptor_bytes(tmp_path, slot, off, value):
    b = bytearray(BASE)
    b[4096 + slot * 585 + off] = value
    _load(tmp_path, bytes(b))


@FUZZ
@given(slot=st.integers(0, 4), field=st.sampled_from([0, 5, 9, 13, 17, 25, 33]),
       value=st.integers(-2 ** 31, 2 ** 32 - 1))
def test_mutated_descriptor_fields(tmp_path, slot, field, value):
    b = bytearray(BASE)
    fmt = "<q" if field >= 17 else ("<i" if field == 0 else "<I")
    try:
        struct.pack_into(fmt, b, 4096 + slot * 585 + field, value)
    except struct.error:
        return
    _load(tmp_path, bytes(b))


@FUZZ
@given(cut=st.integers(0, len(BASE)))
def test_truncations(tmp_path, cut):
    _load(tmp_path, BASE[:cut])


@FUZZ
@given(data=st.binary(max_size=3000))
def test_signature_object_garbage(tmp_path, data):
    """Arbitrary bytes as a signature object's content: reported, never a crash."""
    from sifguard.sif.format import DT_SIGNATURE, GROUP_MASK, signature_extra
    from sifguard.sif.image import NewObject
    p = tmp_path / "s.sif"
    p.write_bytes(open(os.path.join(SYLABS, "one-group.sif"), "rb").read())
    with SifImage(str(p), writable=True) as img:
        img.append(NewObject(DT_SIGNATURE, data=data, linked_id=1 | GROUP_MASK, extra=signature_extra()))
    with SifImage(str(p)) as img:
        assert not verify_image(img, Trust(keys=(KEY,))).verified


@FUZZ
@given(env=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                        lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(
                            st.sampled_from(["payloadType", "payload", "signatures", "keyid", "sig", "x5c"]), c,
                            max_size=4)), max_leaves=12))
def test_envelope_shaped_json(tmp_path, env):
    import json
    data = json.dumps({"payloadType": "application/vnd.sylabs.sif-metadata+json", "payload": "e30=",
                       "signatures": env}).encode()
    test_signature_object_garbage.hypothesis.inner_test(tmp_path, data)
