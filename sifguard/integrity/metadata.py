"""What a sylabs/sif v2 signature covers: header, descriptor and object digests.

The payload is Go's ``json.Marshal`` of imageMetadata: compact, fields in struct order,
objects sorted by id, ids relative to the smallest id of the group.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sifguard.sif.format import Descriptor
from sifguard.sif.image import Progress, SifImage

_ALGS = {"sha224": "sha224", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512",
         "sha512_224": "sha512_224", "sha512_256": "sha512_256"}
_SIZES = {"sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64, "sha512_224": 28, "sha512_256": 32}


class MetadataError(ValueError):
    """A payload that is not valid image metadata."""


@dataclass(frozen=True)
class Digest:
    alg: str
    value: bytes

    def __str__(self) -> str:
        return f"{self.alg}:{self.value.hex()}"

    @classmethod
    def parse(cls, s) -> "Digest":
        if not isinstance(s, str) or s.count(":") != 1:
            raise MetadataError(f"malformed digest {s!r}")
        alg, hexval = s.split(":")
        if alg not in _ALGS:
            raise MetadataError(f"unsupported digest algorithm {alg!r}")
        try:
            value = bytes.fromhex(hexval)
        except ValueError:
            raise MetadataError(f"malformed digest {s!r}") from None
        if len(value) != _SIZES[alg]:
            raise MetadataError(f"digest {s!r} has the wrong length")
        return cls(alg, value)


@dataclass(frozen=True)
class ObjectMetadata:
    relative_id: int
    descriptor_digest: Digest
    object_digest: Digest


@dataclass(frozen=True)
class ImageMetadata:
    header_digest: Digest
    objects: tuple[ObjectMetadata, ...]
    version: int = 1

    def encode(self) -> bytes:
        doc = {"version": self.version, "header": {"digest": str(self.header_digest)},
               "objects": [{"relativeId": o.relative_id,
                            "descriptorDigest": str(o.descriptor_digest),
                            "objectDigest": str(o.object_digest)} for o in self.objects]}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "ImageMetadata":
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise MetadataError("payload is not JSON") from None
        if not isinstance(doc, dict):
            raise MetadataError("payload is not a JSON object")
        if doc.get("version") != 1:
            raise MetadataError(f"unsupported metadata version {doc.get('version')!r}")
        header, objs = doc.get("header"), doc.get("objects")
        if not isinstance(header, dict) or not isinstance(objs, list):
            raise MetadataError("payload lacks header or objects")
        out = []
        for o in objs:
            if not isinstance(o, dict) or not isinstance(o.get("relativeId"), int) \
                    or isinstance(o.get("relativeId"), bool) or not 0 <= o["relativeId"] < 1 << 32:
                raise MetadataError("malformed object entry")
            out.append(ObjectMetadata(o["relativeId"], Digest.parse(o.get("descriptorDigest")),
                                      Digest.parse(o.get("objectDigest"))))
        return cls(Digest.parse(header.get("digest")), tuple(out))


def header_digest(img: SifImage, alg: str = "sha256") -> Digest:
    return Digest(alg, hashlib.new(alg, img.header.integrity_bytes()).digest())


def descriptor_digest(img: SifImage, d: Descriptor, alg: str = "sha256") -> Digest:
    rel = d.id - img.min_id(d.raw_group)
    return Digest(alg, hashlib.new(alg, d.integrity_bytes(rel)).digest())


def object_digest(img: SifImage, d: Descriptor, alg: str = "sha256",
                  progress: Progress | None = None) -> Digest:
    h = hashlib.new(alg)
    for chunk in img.iter_object(d, progress):
        h.update(chunk)
    return Digest(alg, h.digest())


class DigestCache:
    """Each object's bytes are hashed at most once per algorithm, however many
    signatures refer to it."""

    def __init__(self, img: SifImage, progress: Progress | None = None, known: dict[int, str] | None = None):
        """`known`: object id → "alg:hex" already computed over these exact bytes (e.g. by
        the store while it copied them), so they are not hashed a second time."""
        self.img, self.progress = img, progress
        self._objects: dict[tuple[int, str], Digest] = {}
        for oid, s in (known or {}).items():
            dg = Digest.parse(s)
            self._objects[(int(oid), dg.alg)] = dg

    def computed(self) -> dict[int, str]:
        """Object id -> digest, for the objects hashed so far."""
        return {oid: str(dg) for (oid, _), dg in self._objects.items()}

    def object(self, d: Descriptor, alg: str = "sha256") -> Digest:
        key = (d.id, alg)
        if key not in self._objects:
            self._objects[key] = object_digest(self.img, d, alg, self.progress)
        return self._objects[key]


def image_metadata(img: SifImage, objects: list[Descriptor], cache: DigestCache,
                   alg: str = "sha256") -> ImageMetadata:
    """The metadata a signer signs for `objects` (all of one group)."""
    objs = sorted(objects, key=lambda d: d.id)
    min_id = img.min_id(objs[0].raw_group)
    return ImageMetadata(header_digest(img, alg), tuple(
        ObjectMetadata(d.id - min_id, descriptor_digest(img, d, alg), cache.object(d, alg))
        for d in objs))
