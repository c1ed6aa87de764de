"""Certificate path building to site roots and signer identity.

pyca/cryptography's PolicyBuilder applies a Web PKI profile that refuses Ed25519
(Apptainer's own test root is Ed25519), so the code-signing profile is checked here:
signatures link by link, validity at the given time, CA constraints and path length,
keyCertSign on issuers, codeSigning EKU (nested through intermediates that carry an
EKU) and digitalSignature on the leaf, nameConstraints of every CA over the
certificates below it, the key policy on every key but a trust anchor's, SHA-256 or
stronger certificate signatures, no unknown critical extension. Any certificate in the
roots file is a trust anchor, as in Go's x509.Verify.

The search is bounded (PathLimits): the certificates come from the image, i.e. from
the attacker. A path never repeats a (subject, key) pair, so self-issued copies of one
CA cannot loop; candidate issuers are deduplicated by DER; each signature check of a
(certificate, issuer key) pair runs at most once (SignatureMemo, shareable across the
searches of one image or one process); depth, candidates examined, signature checks
and wall time are capped, and hitting a cap refuses with a reason naming it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from sifguard.errors import SignatureError
from sifguard.x509 import keys, name_constraints

_KNOWN_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.CERTIFICATE_POLICIES, ExtensionOID.NAME_CONSTRAINTS,
}


@dataclass(frozen=True)
class PathLimits:
    """Bounds of one path search (and of the x5c taken from an image)."""

    max_depth: int = 8                 # certificates above the leaf, the anchor included
    max_candidates: int = 64           # issuer candidates (matching name) examined
    max_signature_checks: int = 32     # distinct (certificate, issuer key) signature checks
    max_seconds: float | None = 2.0    # wall time; None: no time bound
    max_embedded: int = 10             # certificates accepted from one signature's x5c, leaf included


DEFAULT_LIMITS = PathLimits()
MAX_DEPTH = DEFAULT_LIMITS.max_depth


class ChainError(SignatureError):
    """No acceptable path from the certificate to a trusted root (a refusal, exit 1)."""


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _name(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cn[0].value if cn else cert.subject.rfc4514_string()


def load_embedded(ders, limits: PathLimits = DEFAULT_LIMITS) -> list[x509.Certificate]:
    """The certificates of one signature's x5c (leaf first), each fully parsed, or ChainError:
    more than limits.max_embedded of them, or one that is malformed."""
    if len(ders) > limits.max_embedded:
        raise ChainError(f"signature embeds {len(ders)} certificates (at most {limits.max_embedded} accepted)")
    out = []
    for i, der in enumerate(ders):
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as e:
            raise ChainError(f"embedded certificate {i + 1} is malformed ({e})") from None
        problem = keys.certificate_problem(cert)
        if problem:
            raise ChainError(f"embedded certificate {i + 1}: {problem}")
        out.append(cert)
    return out


def _check_common(cert: x509.Certificate, at: dt.datetime | None) -> None:
    """Validity at `at` (None: validity is judged elsewhere, see build_path's `at`) and no
    unknown critical extension."""
    if at is not None and at < cert.not_valid_before_utc:
        raise ChainError(f"certificate {_name(cert)!r} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}")
    if at is not None and at > cert.not_valid_after_utc:
        raise ChainError(f"certificate {_name(cert)!r} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")
    for e in cert.extensions:
        if e.critical and e.oid not in _KNOWN_CRITICAL:
            raise ChainError(f"certificate {_name(cert)!r} has an unsupported critical extension {e.oid.dotted_string}")


def _check_key(cert: x509.Certificate) -> None:
    problem = keys.key_problem(cert.public_key())
    if problem:
        raise ChainError(f"certificate {_name(cert)!r}: key policy: {problem}")


def _check_signature_algorithm(cert: x509.Certificate) -> None:
    problem = keys.signature_problem(cert)
    if problem:
        raise ChainError(f"certificate {_name(cert)!r}: {problem}")


def _check_issuer(ca: x509.Certificate, below: int, is_root: bool,
                  purpose: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CODE_SIGNING) -> None:
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None and not (is_root and ca.version == x509.Version.v1):
        raise ChainError(f"certificate {_name(ca)!r} is used as a CA but has no basicConstraints")
    if bc is not None:
        if not bc.ca:
            raise ChainError(f"certificate {_name(ca)!r} is not a CA")
        if bc.path_length is not None and below > bc.path_length:
            raise ChainError(f"path length constraint of {_name(ca)!r} exceeded")
    ku = _ext(ca, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise ChainError(f"CA {_name(ca)!r} lacks keyCertSign")
    eku = _ext(ca, x509.ExtendedKeyUsage)
    if purpose is not None and eku is not None and purpose not in eku \
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise ChainError(f"CA {_name(ca)!r} restricts its extended key usage and excludes {purpose._name}")


def _check_name_constraints(ca: x509.Certificate, below: list[x509.Certificate]) -> None:
    """The CA's nameConstraints over the path below it: the leaf and every intermediate that
    is not self-issued (RFC 5280 §6.1.3 (b))."""
    nc = name_constraints.ca_constraints(ca)
    if nc is None:
        return
    for i, c in enumerate(below):
        if i > 0 and c.subject == c.issuer:
            continue
        problem = name_constraints.violation(nc, c)
        if problem:
            raise ChainError(f"certificate {_name(c)!r} violates the name constraints of CA {_name(ca)!r}: {problem}")


def check_leaf(leaf: x509.Certificate) -> None:
    """The code-signing profile of the signer's own certificate."""
    problem = keys.certificate_problem(leaf)
    if problem:
        raise ChainError(f"signer certificate: {problem}")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise ChainError(f"certificate {_name(leaf)!r} lacks the codeSigning extended key usage")
    ku = _ext(leaf, x509.KeyUsage)
    if ku is None or not ku.digital_signature:
        raise ChainError(f"certificate {_name(leaf)!r} lacks the digitalSignature key usage")
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and bc.ca:
        raise ChainError(f"certificate {_name(leaf)!r} is a CA certificate, not a signer")
    _check_key(leaf)


class SignatureMemo:
    """Outcomes of "is this certificate signed by this issuer key?", each computed once.

    Keyed by (certificate DER digest, issuer SubjectPublicKeyInfo digest): copies of one
    CA that share a key cost one check. Share one memo across the searches of one image
    (verify_image does) or of a long-lived process. `max_total` caps the fresh checks it
    runs over its whole life, so many signatures in one image cannot multiply the work; a
    process-wide memo (an Engine's) passes max_total=None and relies on each search's bounds.
    """

    def __init__(self, max_total: int | None = 256):
        self.max_total = max_total
        self.checks = 0
        self._done: dict[tuple[bytes, bytes], bool] = {}

    def issued_by(self, child: "_Cert", parent: "_Cert", search: "_Search") -> bool:
        k = (child.digest, parent.spki_digest)
        if k not in self._done:
            search.count_check()
            if self.max_total is not None and self.checks >= self.max_total:
                raise ChainError(f"certificate path searches for this image exceeded {self.max_total} signature checks")
            self.checks += 1
            try:
                child.cert.verify_directly_issued_by(parent.cert)
                self._done[k] = True
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                self._done[k] = False
        return self._done[k]


class _Cert:
    """A certificate with what the search compares, computed once."""

    __slots__ = ("cert", "der", "digest", "spki_digest", "anchor", "node")

    def __init__(self, cert: x509.Certificate, anchor: bool):
        self.cert = cert
        self.der = _der(cert)
        self.digest = hashlib.sha256(self.der).digest()
        try:
            spki = keys.public_bytes(cert.public_key())
        except (ValueError, UnsupportedAlgorithm):
            spki = b"unparsable:" + self.digest
        self.spki_digest = hashlib.sha256(spki).digest()
        self.anchor = anchor
        self.node = (cert.subject, self.spki_digest)   # a path never holds the same node twice


class _Search:
    def __init__(self, roots, intermediates, at: dt.datetime | None, limits: PathLimits, memo: SignatureMemo,
                 ca_purpose: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CODE_SIGNING):
        self.at, self.limits, self.memo, self.ca_purpose = at, limits, memo, ca_purpose
        self.by_subject: dict[x509.Name, list[_Cert]] = {}
        seen: set[bytes] = set()
        for cert, anchor in [(r, True) for r in roots] + [(c, False) for c in intermediates]:
            if keys.certificate_problem(cert):
                continue                      # unparsable: can issue nothing
            c = _Cert(cert, anchor)
            if c.der in seen:
                continue
            seen.add(c.der)
            self.by_subject.setdefault(cert.subject, []).append(c)
        self.anchors = {c.der for cs in self.by_subject.values() for c in cs if c.anchor}
        self.reasons: list[str] = []
        self.candidates = self.checks = 0
        self.deadline = None if limits.max_seconds is None else time.monotonic() + limits.max_seconds

    def count_check(self) -> None:
        self.checks += 1
        if self.checks > self.limits.max_signature_checks:
            raise ChainError(f"certificate path search exceeded {self.limits.max_signature_checks} signature checks")

    def _count_candidate(self) -> None:
        self.candidates += 1
        if self.candidates > self.limits.max_candidates:
            raise ChainError(f"certificate path search exceeded {self.limits.max_candidates} candidate issuers")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ChainError(f"certificate path search exceeded {self.limits.max_seconds:g} s")

    def _acceptable(self, path: list[_Cert], cand: _Cert) -> bool:
        """Is cand, whose signature on path[-1] verified, an acceptable next certificate?"""
        try:
            _check_common(cand.cert, self.at)
            if not cand.anchor:
                _check_key(cand.cert)
            _check_issuer(cand.cert, len(path) - 1, is_root=cand.anchor, purpose=self.ca_purpose)
            _check_name_constraints(cand.cert, [p.cert for p in path])
        except ChainError as e:
            self.reasons.append(str(e))
            return False
        return True

    def extend(self, path: list[_Cert]) -> list[_Cert] | None:
        cur = path[-1]
        if cur.der in self.anchors:
            return path
        cands = self.by_subject.get(cur.cert.issuer, [])
        if not cands:
            return None
        try:
            _check_signature_algorithm(cur.cert)
        except ChainError as e:
            self.reasons.append(str(e))
            return None
        if len(path) > self.limits.max_depth:
            self.reasons.append(f"certificate path search exceeded the maximum depth of {self.limits.max_depth} "
                                "certificates above the signer")
            return None
        on_path = {p.node for p in path}
        for cand in cands:
            if cand.node in on_path:          # a loop: costs a set lookup, is not counted
                continue
            self._count_candidate()
            if not self.memo.issued_by(cur, cand, self):
                continue
            if self._acceptable(path, cand):
                found = self.extend(path + [cand])
                if found:
                    return found
        return None


_NOW = object()


def build_path(leaf: x509.Certificate, intermediates: list[x509.Certificate],
               roots: list[x509.Certificate], at: "dt.datetime | None | object" = _NOW, *,
               limits: PathLimits = DEFAULT_LIMITS, memo: SignatureMemo | None = None,
               leaf_check=None, ca_purpose: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CODE_SIGNING,
               ) -> list[x509.Certificate]:
    """Return [leaf, …, root] or raise ChainError with the most specific reason found, or the
    bound that stopped the search. Re-validating a known path (e.g. a cached one) is
    build_path(path[0], path[1:], roots, at): len(path)-1 signature checks, fewer with a memo.

    `at`: the instant every certificate must be valid at; omitted: now; None: validity is
    not judged here (the caller checks it with `validity_problem` — expiry as a check of
    its own, reported apart from authenticity). `leaf_check`: the leaf's profile (default
    code signing, `check_leaf`); `ca_purpose`: the extended key usage a CA that restricts
    its own must include (None: CA EKUs are not nested, as OpenSSL treats time stamping)."""
    if at is _NOW:
        at = dt.datetime.now(dt.timezone.utc)
    if not roots:
        raise ChainError("no trust roots given")
    (leaf_check or check_leaf)(leaf)
    _check_common(leaf, at)
    search = _Search(roots, intermediates, at, limits, memo or SignatureMemo(), ca_purpose)
    path = search.extend([_Cert(leaf, anchor=False)])
    if path is None:
        if search.reasons:
            raise ChainError(search.reasons[0])
        raise ChainError(f"certificate {_name(leaf)!r} (issuer {leaf.issuer.rfc4514_string()}) "
                         "does not chain to a trusted root")
    return [c.cert for c in path]


def validity_problem(path, at: dt.datetime, slack: dt.timedelta = dt.timedelta(0)) -> str | None:
    """Why some certificate of `path` is not valid over [at - slack, at + slack], or None.
    A trust anchor's own validity counts too (Go and OpenSSL check it)."""
    for c in path:
        if at - slack < c.not_valid_before_utc:
            return f"certificate {_name(c)!r} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}"
        if at + slack > c.not_valid_after_utc:
            return f"certificate {_name(c)!r} expired {c.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}"
    return None


@dataclass(frozen=True)
class SignerIdentity:
    subject: str
    emails: tuple[str, ...]
    serial: str
    issuer: str
    fingerprint: str
    not_after: str
    chain: tuple[str, ...] = ()   # subjects from leaf to root, when a path was built

    def as_dict(self) -> dict:
        return {"subject": self.subject, "email": list(self.emails), "serial": self.serial,
                "issuer": self.issuer, "fingerprint": "sha256:" + self.fingerprint,
                "not_after": self.not_after, "chain": list(self.chain)}


def identity(cert: x509.Certificate, path: list[x509.Certificate] | None = None) -> SignerIdentity:
    san = _ext(cert, x509.SubjectAlternativeName)
    emails = tuple(san.get_values_for_type(x509.RFC822Name)) if san else ()
    return SignerIdentity(
        subject=cert.subject.rfc4514_string(), emails=emails, serial=f"{cert.serial_number:X}",
        issuer=cert.issuer.rfc4514_string(), fingerprint=fingerprint(cert),
        not_after=cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        chain=tuple(c.subject.rfc4514_string() for c in (path or [])))
