"""Signer-aware verification, as strict as Go's on integrity.

Every non-signature object must belong to a group; each group needs a DSSE signature
by a trusted signer whose payload covers exactly the group's objects, with every
header, descriptor and object digest matching. Other signatures on the group are
reported with their own status instead of failing the image (unlike Apptainer,
issue #2158) — except a signature that names a trusted key and does not verify,
which refuses the image.

Each X.509 signature is judged on three separate checks, so that a policy can weigh them
apart (policy `verification` levels): *integrity* (the signature verifies with its
certificate's key and the payload's digests match the image), *authenticity* (the
certificate chains to a trusted root; validity aside) and *expiry* (every certificate of
that path is valid at the signing time). The signing time is the genTime of the earliest
RFC 3161 token on the signature that counts (sifguard.tsp.token; the TSA chains to the
TSA roots at genTime), else now. `status` sums them up strictly: `verified` only when all
three pass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
    validity_problem,
)

MAX_TOKENS = 8             # time-stamp tokens considered per signature
MAX_IMAGE_TOKENS = 64      # ... and per image (each costs a CMS check and a TSA path search)
FUTURE_SKEW = dt.timedelta(minutes=5)   # a token dated later than the clock plus this counts for nothing

VERIFIED, INVALID, UNTRUSTED, UNSUPPORTED, TAMPERED = (
    "verified", "invalid", "untrusted", "unsupported", "tampered")


@dataclass(frozen=True)
class Trust:
    """What the verifier trusts: bare public keys, or X.509 roots (with path hints)."""

    keys: tuple = ()
    roots: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    certs: tuple[x509.Certificate, ...] = ()      # candidate signer certs given by the user
    at: dt.datetime | None = None                   # "now" (None: the clock)
    limits: PathLimits = DEFAULT_LIMITS             # bounds of path building over image-supplied certs
    tsa_roots: tuple[x509.Certificate, ...] | None = None   # who may time-stamp (None: the roots)
    timestamps: bool = True                          # judge validity at a token's genTime when one counts

    def tsa_anchors(self) -> tuple[x509.Certificate, ...]:
        return self.roots if self.tsa_roots is None else self.tsa_roots


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
    chain: tuple = ()             # certificates of the path, leaf to root (x509 mode; validity aside)
    checks: dict = field(default_factory=dict)   # integrity | authenticity | expiry -> (passed, reason)
    signed_at: object = None      # sifguard.tsp.token.TrustedTime of the token that counts, or None
    trusted_times: tuple = ()     # every token that counts, earliest first (signed_at is the first)
    time_basis: str = ""          # timestamp | now: the instant validity was judged at
    timestamps: list = field(default_factory=list)   # per token: {"status": valid|invalid, ...}
    embedded: tuple = ()          # the certificates the entry carried (x5c), leaf first
    tokens: tuple = ()            # the entry's time-stamp tokens (DER)
    sig: bytes = b""              # the entry's signature value (what the tokens are over)
    token_verdicts: dict = field(default_factory=dict)   # sha256 hex of a token that counts -> TrustedTime

    def passed(self, check: str) -> bool:
        return bool(self.checks.get(check, (False,))[0])

    def time_dict(self) -> dict:
        """Which time the certificates were judged at, and why."""
        if self.signed_at is not None:
            return {"basis": "timestamp", **self.signed_at.as_dict()}
        if not self.timestamps:
            return {"basis": "now", "why": "no time-stamp token"}
        bad = "; ".join(t["reason"] for t in self.timestamps if t["status"] != "valid")
        return {"basis": "now", "why": f"no time-stamp token counts ({bad})" if bad else "time stamps not considered"}

    def as_dict(self) -> dict:
        d = {"group": self.group, "object": self.object_id, "index": self.index,
             "type": self.kind, "status": self.status, "reason": self.reason,
             "keyid": self.keyid, "algorithm": self.algorithm,
             "signer": self.signer.as_dict() if self.signer else ({"key": self.key} if self.key else None)}
        if self.checks:
            d["checks"] = {k: {"passed": v[0], "reason": v[1]} for k, v in self.checks.items()}
        if self.time_basis:
            d["time"] = self.time_dict()
        if self.timestamps:
            d["timestamps"] = list(self.timestamps)
        return d


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


def _timestamps(entry: dsse.EnvelopeSignature, trust: Trust, res: SignatureResult, memo: SignatureMemo,
                budget: dict, recorded: dict | None = None):
    """The earliest trusted time the entry's tokens give its signature value, or None;
    every token's outcome lands in res.timestamps, and each token that counts in
    res.token_verdicts (its TrustedTime, by the token's SHA-256). `recorded`: such verdicts
    a findings record kept under the same trust (see enforce/decide.py times_id): reused,
    not re-verified — unless the clock now says the token is from the future. A token that
    does not count is verified again each time: some refusals (path search bounds, the
    clock) are not the token's fault and may pass later."""
    if not entry.timestamps or not trust.timestamps:
        return None
    from sifguard.tsp import token as T
    good = []
    for i, der in enumerate(entry.timestamps):
        if i >= MAX_TOKENS:
            res.timestamps.append({"status": "invalid", "reason": f"more than {MAX_TOKENS} tokens: the rest ignored"})
            break
        budget["tokens"] = budget.get("tokens", 0) + 1
        if budget["tokens"] > MAX_IMAGE_TOKENS:
            res.timestamps.append({"status": "invalid",
                                   "reason": f"the image carries more than {MAX_IMAGE_TOKENS} tokens: the rest ignored"})
            break
        digest = hashlib.sha256(der).hexdigest()
        tt = (recorded or {}).get(digest)
        if tt is None or tt.gen_time - tt.accuracy > dt.datetime.now(dt.timezone.utc) + FUTURE_SKEW:
            try:
                tok = T.parse(der)
                tt = T.verify(tok, entry.sig, trust.tsa_anchors(), trust.intermediates, limits=trust.limits,
                              memo=memo)
                if tok.earliest > dt.datetime.now(dt.timezone.utc) + FUTURE_SKEW:
                    # the clock, not trust.at: no token can come from the real future
                    raise T.TimestampError(f"time-stamp genTime {tok.gen_time:%Y-%m-%dT%H:%M:%SZ} is in the future")
            except T.TimestampError as e:
                res.timestamps.append({"status": "invalid", "reason": str(e)})
                continue
        res.token_verdicts[digest] = tt
        good.append(tt)
        res.timestamps.append({"status": "valid", "reason": "token verified; TSA chains to a trusted root",
                               **tt.as_dict()})
    res.trusted_times = tuple(sorted(good, key=lambda t: (t.latest, t.gen_time)))
    return T.earliest(good)


def judge(leaf, hints, trust: Trust, tokens, sig: bytes, memo: SignatureMemo, budget: dict,
          recorded: dict | None = None) -> SignatureResult:
    """Authenticity, expiry and the signing time of a signature whose integrity is known
    (a recorded one): the tokens re-verified unless `recorded` holds their verdicts (see
    _timestamps), the path rebuilt at the signing time.
    `budget`: shared by the judgements of one image (bounds the tokens weighed)."""
    res = SignatureResult(0, 0, 0, "dsse", UNTRUSTED, "")
    res.signed_at = _timestamps(dsse.EnvelopeSignature("", sig, (), tuple(tokens)), trust, res, memo, budget,
                                recorded)
    _judge_path(leaf, hints, trust, res, memo)
    return res


def _judge_path(leaf, hints, trust: Trust, res: SignatureResult, memo: SignatureMemo):
    """Authenticity and expiry of `leaf` as two checks: the path (validity aside) or None."""
    signed_at = res.signed_at
    when = signed_at.gen_time if signed_at is not None else (trust.at or dt.datetime.now(dt.timezone.utc))
    res.time_basis = "timestamp" if signed_at is not None else "now"
    try:       # a path valid at the signing time, when there is one
        path = build_path(leaf, hints, list(trust.roots), when, limits=trust.limits, memo=memo)
        timed_error = None
    except ChainError as e:
        timed_error = str(e)
        try:   # is it only a matter of time? (authenticity holds, expiry fails)
            path = build_path(leaf, hints, list(trust.roots), None, limits=trust.limits, memo=memo)
        except ChainError as e2:
            res.checks["authenticity"] = (False, str(e2) if "expired" in timed_error or
                                          "not valid before" in timed_error else timed_error)
            res.signer = identity(leaf)
            return None
    res.checks["authenticity"] = (True, "certificate chains to a trusted root")
    slack = signed_at.accuracy if signed_at is not None else dt.timedelta(0)
    problem = timed_error and (validity_problem(path, when, slack) or timed_error) or validity_problem(path, when, slack)
    if problem:
        if signed_at is None and res.timestamps:
            problem += f" ({res.time_dict()['why']})"
        elif signed_at is None:
            problem += " (the signature carries no time-stamp token)"
        else:
            problem = f"at the time-stamped signing time {signed_at.as_dict()['gen_time']}: {problem}"
        res.checks["expiry"] = (False, problem)
    else:
        res.checks["expiry"] = (True, f"certificates valid at {when:%Y-%m-%dT%H:%M:%SZ} "
                                + ("(time-stamped)" if signed_at is not None else "(now)"))
    res.signer, res.chain = identity(leaf, path), tuple(path)
    return path


def _check_entry(entry: dsse.EnvelopeSignature, pae: bytes, hashtype: int, trust: Trust,
                 res: SignatureResult, memo: SignatureMemo, budget: dict | None = None) -> None:
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
    res.embedded, res.tokens, res.sig = tuple(embedded), tuple(entry.timestamps), entry.sig
    cands = _signer_candidates(entry, embedded[:1] + list(trust.certs), res)
    hints = list(trust.intermediates) + embedded[1:]
    if not cands:
        res.status = UNTRUSTED
        res.reason = res.reason or f"no certificate for the signing key (keyid {entry.keyid or 'none'})"
        return
    fallback, stamped = None, False
    budget = {} if budget is None else budget
    for leaf in cands:
        res.algorithm = keys.algorithm(leaf.public_key())
        ok = keys.verify(leaf.public_key(), entry.sig, pae, hashtype)
        if ok and not stamped:      # tokens are weighed only for a signature that verifies
            res.signed_at, stamped = _timestamps(entry, trust, res, memo, budget), True
        res.checks = {}
        path = _judge_path(leaf, hints, trust, res, memo)
        if ok:
            res.checks = {"integrity": (True, "signature verifies with the certificate's key"), **res.checks}
            if path is None:
                res.status, res.reason = UNTRUSTED, res.checks["authenticity"][1]
            elif not res.passed("expiry"):
                res.status, res.reason = UNTRUSTED, res.checks["expiry"][1]
            else:
                res.status, res.reason = VERIFIED, (
                    "signature verified; certificate chains to a trusted root"
                    + (f" (valid at the time-stamped {res.signed_at.as_dict()['gen_time']})"
                       if res.signed_at is not None else ""))
            return
        if path is not None and entry.keyid:
            res.checks = {"integrity": (False, "signature does not verify"), **res.checks}
            res.status, res.reason = INVALID, f"signature does not verify with the trusted certificate {leaf.subject.rfc4514_string()}"
            return
        fallback = fallback or (path is not None)
    res.checks = {"integrity": (False, "signature does not verify with the embedded certificate")}
    res.signer, res.chain, res.signed_at, res.time_basis = res.signer, (), None, ""
    if fallback:
        res.status, res.reason = UNTRUSTED, "keyid-less signature not made by a trusted certificate"
    else:
        res.status, res.reason = UNTRUSTED, "signature does not verify with the embedded certificate"


def _integrity(img: SifImage, group_objs: list[Descriptor], md: ImageMetadata,
               cache: DigestCache | None) -> str | None:
    """None when the payload covers exactly these objects and every digest matches
    (`cache` None: the objects' data is not hashed — header and descriptors only)."""
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
        if cache is not None and om.object_digest != cache.object(d, om.object_digest.alg):
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
            _check_entry(entry, pae, hashtype, trust, res, memo, memo.budget)
        if res.passed("integrity") or (res.status == VERIFIED and not res.checks):
            problem = md_err or _integrity(img, gobjs, md, cache)
            if problem:
                if res.checks:
                    res.checks["integrity"] = (False, problem)
                if res.status == VERIFIED or res.passed("authenticity"):
                    res.status, res.reason = TAMPERED, problem
        out.append(res)
    if not out:
        out.append(SignatureResult(g, so.id, 0, "dsse", UNTRUSTED, "envelope holds no signature"))
    return out


def verify_image(img: SifImage, trust: Trust, groups: list[int] | None = None,
                 progress: Progress | None = None, known_digests: dict[int, str] | None = None,
                 hash_objects: bool = True) -> Report:
    """`known_digests`: object digests computed over these same bytes in an earlier pass
    (the image store hashes while it copies); header and descriptors are always re-read.
    `hash_objects=False`: the objects' data is not read (a quick look, e.g. at submission:
    signatures, signers, header and descriptors — never a verdict anything runs on)."""
    rep = Report(img.path)
    cache = DigestCache(img, progress, known_digests)
    objects = cache if hash_objects else None
    memo = SignatureMemo()            # certificate signature checks, once each for the whole image
    memo.budget = {}                  # ... and the time-stamp tokens weighed for it
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
            results += _check_signature_object(img, g, gobjs, so, trust, objects, memo)
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
