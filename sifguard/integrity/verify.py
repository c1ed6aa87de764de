"""Signer-aware verification, as strict as Go's on integrity.

Every non-signature object must belong to a group; each group needs a DSSE signature
by a trusted signer whose payload covers exactly the group's objects, with every
header, descriptor and object digest matching. Other signatures on the group are
reported with their own status instead of failing the image (unlike Apptainer,
issue #2158) — except a signature that names a trusted key and does not verify,
which refuses the image.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from sifguard.integrity import dsse
from sifguard.integrity.metadata import (
    DigestCache, MetadataError, ImageMetadata, descriptor_digest, header_digest,
)
from sifguard.sif.format import Descriptor
from sifguard.sif.image import Progress, SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import (
    DEFAULT_LIMITS, ChainError, PathLimits, SignatureMemo, SignerIdentity, build_path, identity, load_embedded,
)

VERIFIED, INVALID, UNTRUSTED, UNSUPPORTED, TAMPERED = (
    "verified", "invalid", "untrusted", "unsupported", "tampered")


@dataclass(frozen=True)
class Trust:
    """What the verifier trusts: bare public keys, or X.509 roots (with path hints)."""

    keys: tuple = ()
    roots: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    certs: tuple[x509.Certificate, ...] = ()      # candidate signer certs given by the user
    at: dt.datetime | None = None
    limits: PathLimits = DEFAULT_LIMITS             # bounds of path building over image-supplied certs


@dataclass
class SignatureResult:
    group: int
    object_id: int
    index: int                    # position in the envelope
    kind: str                     # dsse | pgp | legacy-pgp | unknown
    status: str
    reason: str
    keyid: str = ""
    algorithm: str = ""
    signer: SignerIdentity | None = None
    key: str = ""                 # keyid of the bare key that verified it (key mode)
    chain: tuple = ()             # certificates of the path, leaf to root (x509 mode)

    def as_dict(self) -> dict:
        return {"group": self.group, "object": self.object_id, "index": self.index,
                "type": self.kind, "status": self.status, "reason": self.reason,
                "keyid": self.keyid, "algorithm": self.algorithm,
                "signer": self.signer.as_dict() if self.signer else ({"key": self.key} if self.key else None)}


@dataclass
class Report:
    path: str
    verified: bool = False
    reason: str = ""
    groups: dict[int, str] = field(default_factory=dict)     # group -> status
    signatures: list[SignatureResult] = field(default_factory=list)
    digests: dict = field(default_factory=dict)             # object id -> "sha256:..." (verified ones)

    def signers(self) -> list[SignatureResult]:
        return [s for s in self.signatures if s.status == VERIFIED]

    def as_dict(self) -> dict:
        return {"image": self.path, "verified": self.verified, "reason": self.reason,
                "groups": {str(g): s for g, s in self.groups.items()},
                "signatures": [s.as_dict() for s in self.signatures]}


def _key_entry(entry: dsse.EnvelopeSignature, pae: bytes, hashtype: int, trust: Trust,
               res: SignatureResult) -> None:
    """Key mode: the entry against the bare keys the operator gave."""
    given = []
    for k in trust.keys:
        try:
            given.append((k, keys.keyid(k)))
        except keys.KeyPolicyError:
            continue                          # outside the key policy: trusts nothing
    cands = [(k, kid) for k, kid in given if not entry.keyid or entry.keyid == kid]
    for k, kid in cands:
        res.algorithm = keys.algorithm(k)
        if keys.verify(k, entry.sig, pae, hashtype):
            res.status, res.reason, res.key = VERIFIED, "signature verified with the given key", kid
            return
    if cands and entry.keyid:
        res.status, res.reason = INVALID, f"signature does not verify with the trusted key {cands[0][1]}"
    elif cands:   # no keyid: it names no key, so failing against ours is not a forgery of ours
        res.status, res.reason = UNTRUSTED, "keyid-less signature not made by a given key"
    else:
        res.status, res.reason = UNTRUSTED, f"signed by a key that was not given (keyid {entry.keyid or 'none'})"


def _signer_candidates(entry: dsse.EnvelopeSignature, leaves, res: SignatureResult) -> list:
    """The leaves that may have made this entry: inside the key policy and, when the entry
    names a keyid, with that keyid. Leaves outside the policy leave their reason in res."""
    out = []
    for leaf in leaves:
        unusable = keys.certificate_problem(leaf)
        if unusable:
            res.status, res.reason = UNTRUSTED, f"signer certificate: {unusable}"
            continue
        problem = keys.key_problem(leaf.public_key())
        if problem:
            res.status, res.reason, res.signer = UNTRUSTED, f"signer certificate: key policy: {problem}", identity(leaf)
            continue
        if not entry.keyid or entry.keyid == keys.keyid(leaf.public_key()):
            out.append(leaf)
    return out


def _check_entry(entry: dsse.EnvelopeSignature, pae: bytes, hashtype: int, trust: Trust,
                 res: SignatureResult, memo: SignatureMemo) -> None:
    """Decide one envelope signature's status against the trust; fills res. Everything the
    image supplies is hostile: problems become this signature's status, never exceptions."""
    res.keyid = entry.keyid
    if trust.keys:
        _key_entry(entry, pae, hashtype, trust, res)
        return
    try:
        embedded = load_embedded(entry.x5c, trust.limits)
    except ChainError as e:
        res.status, res.reason = UNTRUSTED, str(e)
        return
    cands = _signer_candidates(entry, embedded[:1] + list(trust.certs), res)
    hints = list(trust.intermediates) + embedded[1:]
    if not cands:
        res.status = UNTRUSTED
        res.reason = res.reason or f"no certificate for the signing key (keyid {entry.keyid or 'none'})"
        return
    for leaf in cands:
        res.algorithm = keys.algorithm(leaf.public_key())
        ok = keys.verify(leaf.public_key(), entry.sig, pae, hashtype)
        try:
            path = build_path(leaf, hints, list(trust.roots), trust.at, limits=trust.limits, memo=memo)
        except ChainError as e:
            res.status, res.reason, res.signer = UNTRUSTED, str(e), identity(leaf)
            if ok:
                return
            continue
        res.signer, res.chain = identity(leaf, path), tuple(path)
        if ok:
            res.status, res.reason = VERIFIED, "signature verified; certificate chains to a trusted root"
            return
        if entry.keyid:
            res.status, res.reason = INVALID, f"signature does not verify with the trusted certificate {leaf.subject.rfc4514_string()}"
            return
        res.status, res.reason = UNTRUSTED, "keyid-less signature not made by a trusted certificate"
    if res.status != UNTRUSTED:
        res.status, res.reason = UNTRUSTED, "signature does not verify with the embedded certificate"


def _integrity(img: SifImage, group_objs: list[Descriptor], md: ImageMetadata,
               cache: DigestCache) -> str | None:
    """None when the payload covers exactly these objects and every digest matches."""
    min_id = min(d.id for d in group_objs)
    signed = {min_id + o.relative_id: o for o in md.objects}
    have = {d.id: d for d in group_objs}
    for oid in sorted(have):
        if oid not in signed:
            return f"object {oid} is not covered by the signature"
    for oid in sorted(signed):
        if oid not in have:
            return f"signed object {oid} is missing from the image"
    if md.header_digest != header_digest(img, md.header_digest.alg):
        return "header integrity compromised (launch script, magic, version or UUID changed)"
    for oid, om in sorted(signed.items()):
        d = have[oid]
        if om.descriptor_digest != descriptor_digest(img, d, om.descriptor_digest.alg):
            return f"descriptor of object {oid} changed (data object descriptor integrity compromised)"
        if om.object_digest != cache.object(d, om.object_digest.alg):
            return f"data of object {oid} changed (data object integrity compromised)"
    return None


def _group_status(results: list[SignatureResult]) -> str:
    for status in (INVALID, TAMPERED, VERIFIED, UNTRUSTED, UNSUPPORTED):
        if any(r.status == status for r in results):
            return status
    return "unsigned"


def _check_signature_object(img: SifImage, g: int, gobjs: list[Descriptor], so: Descriptor,
                            trust: Trust, cache: DigestCache, memo: SignatureMemo) -> list[SignatureResult]:
    kind, env = dsse.classify(img.read_object(so))
    if env is None:
        what = {"pgp": "PGP clear-signed", "legacy-pgp": "legacy (SIFHASH, PGP)",
                "unknown": "unrecognised"}[kind]
        return [SignatureResult(g, so.id, 0, kind, UNSUPPORTED,
                                f"{what} signature: not verifiable by X.509/DSSE policy")]
    pae = dsse.pae(env.payload_type, env.payload)
    md, md_err = None, ""
    try:
        md = ImageMetadata.decode(env.payload)
    except MetadataError as e:
        md_err = f"signed payload is not valid image metadata: {e}"
    hashtype = so.signature_info()[0]
    out = []
    for i, entry in enumerate(env.signatures):
        res = SignatureResult(g, so.id, i, "dsse", UNTRUSTED, "")
        if not 1 <= hashtype <= 5:
            res.status, res.reason = INVALID, f"signature descriptor has invalid hash type {hashtype}"
        else:
            _check_entry(entry, pae, hashtype, trust, res, memo)
        if res.status == VERIFIED:
            problem = md_err or _integrity(img, gobjs, md, cache)
            if problem:
                res.status, res.reason = TAMPERED, problem
        out.append(res)
    if not out:
        out.append(SignatureResult(g, so.id, 0, "dsse", UNTRUSTED, "envelope holds no signature"))
    return out


def verify_image(img: SifImage, trust: Trust, groups: list[int] | None = None,
                 progress: Progress | None = None, known_digests: dict[int, str] | None = None) -> Report:
    """`known_digests`: object digests computed over these same bytes in an earlier pass
    (the image store hashes while it copies); header and descriptors are always re-read."""
    rep = Report(img.path)
    cache = DigestCache(img, progress, known_digests)
    memo = SignatureMemo()            # certificate signature checks, once each for the whole image
    for d in img.objects:
        if not d.is_signature and d.group_id == 0:
            rep.reason = f"object {d.id} ({d.datatype_name}) is not in any object group, so no signature can cover it"
            return rep
    all_groups = img.group_ids()
    if not all_groups:
        rep.reason = "image has no signed content (no object groups)"
        return rep
    targets = groups or all_groups
    refusals: list[str] = []
    for g in targets:
        gobjs = img.group_objects(g)
        if not gobjs:
            refusals.append(f"no object group {g}")
            continue
        sig_objs = img.signatures_for_group(g) + [
            s for d in gobjs for s in img.signatures_for_object(d.id)]
        results: list[SignatureResult] = []
        for so in sig_objs:
            results += _check_signature_object(img, g, gobjs, so, trust, cache, memo)
        rep.signatures += results
        status = _group_status(results)
        rep.groups[g] = status
        if status in (INVALID, TAMPERED):
            refusals.append(f"group {g}: " + next(r.reason for r in results if r.status == status))
        elif status in ("unsigned", UNSUPPORTED):
            kinds = sorted({s.kind for s in rep.signatures if s.group == g})
            if kinds:
                refusals.append(f"group {g} carries only {', '.join(kinds)} signatures, "
                                "which X.509/DSSE verification cannot check")
            else:
                refusals.append(f"group {g} is not signed")
        elif status == UNTRUSTED:
            untrusted = [r for r in results if r.status == UNTRUSTED]
            # the most informative reason: one about a certificate we could examine
            why = next((r.reason for r in untrusted if r.signer), untrusted[0].reason)
            refusals.append(f"group {g}: no trusted signature ({why})")
    if refusals:
        rep.reason = refusals[0]
        return rep
    rep.verified = True
    rep.reason = "all object groups signed by a trusted signer"
    rep.digests = {oid: dg for oid, dg in cache.computed().items()
                   if any(d.id == oid for g in targets for d in img.group_objects(g))}
    return rep
