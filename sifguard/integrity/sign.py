"""Signing: one DSSE envelope per object group, all signers in one envelope (as Go)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sifguard.errors import BadInputError, KeyMaterialError
from sifguard.integrity import dsse
from sifguard.integrity.metadata import DigestCache, image_metadata
from sifguard.sif.format import DT_SIGNATURE, GROUP_MASK, signature_extra
from sifguard.sif.image import NewObject, Progress, SifImage
from sifguard.x509 import keys


@dataclass(frozen=True)
class Signer:
    """A private key and, optionally, its certificate chain (leaf first)."""

    key: keys.PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self):
        if self.chain and keys.public_bytes(self.chain[0].public_key()) != keys.public_bytes(self.key.public_key()):
            raise KeyMaterialError(
                f"certificate {self.chain[0].subject.rfc4514_string()} does not match the signing key")

    def entry(self, pae: bytes, stamp=None) -> dsse.EnvelopeSignature:
        """`stamp(signature value) -> token DER`: a time-stamp for the new signature."""
        sig = keys.sign(self.key, pae)
        return dsse.EnvelopeSignature(
            keyid=keys.keyid(self.key.public_key()), sig=sig,
            x5c=tuple(c.public_bytes(serialization.Encoding.DER) for c in self.chain),
            timestamps=(stamp(sig),) if stamp is not None else ())


def _targets(img: SifImage, groups: list[int] | None,
             object_ids: list[int] | None) -> list[tuple[int, list]]:
    """(group, descriptors) to sign, in Go's order: chosen groups, chosen objects, else all."""
    out = []
    for g in groups or []:
        ods = img.group_objects(g)
        if not ods:
            raise BadInputError(f"no object group {g} in {img.path}")
        out.append((g, ods))
    if object_ids:
        by_group: dict[int, list] = {}
        for oid in object_ids:
            d = img.object(oid)
            if d.group_id == 0:
                raise BadInputError(f"object {oid} belongs to no group and cannot be signed")
            by_group.setdefault(d.group_id, []).append(d)
        out.extend(sorted(by_group.items()))
    if not out:
        out = [(g, img.group_objects(g)) for g in img.group_ids()]
    if not out:
        raise BadInputError(f"{img.path} has no object group to sign")
    return out


def plan(img: SifImage, signers: list[Signer], groups: list[int] | None = None,
         object_ids: list[int] | None = None, progress: Progress | None = None,
         stamp=None) -> list[NewObject]:
    """The signature objects to append; reads the image, writes nothing. `stamp`: see
    Signer.entry (every new signature gets a token, or the plan fails)."""
    if not signers:
        raise KeyMaterialError("no signing key given")
    cache = DigestCache(img, progress)
    objs = []
    for group, ods in _targets(img, groups, object_ids):
        payload = image_metadata(img, ods, cache).encode()
        pae = dsse.pae(dsse.PAYLOAD_TYPE, payload)
        env = dsse.Envelope(dsse.PAYLOAD_TYPE, payload, tuple(s.entry(pae, stamp) for s in signers))
        objs.append(NewObject(datatype=DT_SIGNATURE, data=env.encode(),
                              linked_id=group | GROUP_MASK, extra=signature_extra(1)))
    return objs


def sign_image(path: str, signers: list[Signer], groups: list[int] | None = None,
               object_ids: list[int] | None = None, progress: Progress | None = None,
               stamp=None) -> list[int]:
    """Sign in place. Every signature (and time-stamp) is had before the first byte is
    written, under an exclusive lock, so a failure leaves the image untouched. Returns new
    object ids."""
    with SifImage(path, writable=True) as img:
        objs = plan(img, signers, groups, object_ids, progress, stamp)
        return [img.append(o).id for o in objs]
