"""Certificate path building to site roots and signer identity.

pyca/cryptography's PolicyBuilder applies a Web PKI profile that refuses Ed25519
(Apptainer's own test root is Ed25519), so the code-signing profile is checked here:
signatures link by link, validity at the given time, CA constraints and path length,
keyCertSign on issuers, codeSigning EKU (nested through intermediates that carry an
EKU) and digitalSignature on the leaf, no unknown critical extension. Any certificate
in the roots file is a trust anchor, as in Go's x509.Verify.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

_KNOWN_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.CERTIFICATE_POLICIES,
}
MAX_DEPTH = 8


class ChainError(Exception):
    """No acceptable path from the certificate to a trusted root."""


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


def _check_common(cert: x509.Certificate, at: dt.datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise ChainError(f"certificate {_name(cert)!r} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}")
    if at > cert.not_valid_after_utc:
        raise ChainError(f"certificate {_name(cert)!r} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")
    for e in cert.extensions:
        if e.critical and e.oid not in _KNOWN_CRITICAL:
            raise ChainError(f"certificate {_name(cert)!r} has an unsupported critical extension {e.oid.dotted_string}")


def _check_issuer(ca: x509.Certificate, below: int, is_root: bool) -> None:
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
    if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku \
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise ChainError(f"CA {_name(ca)!r} restricts its extended key usage and excludes codeSigning")


def check_leaf(leaf: x509.Certificate) -> None:
    """The code-signing profile of the signer's own certificate."""
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise ChainError(f"certificate {_name(leaf)!r} lacks the codeSigning extended key usage")
    ku = _ext(leaf, x509.KeyUsage)
    if ku is None or not ku.digital_signature:
        raise ChainError(f"certificate {_name(leaf)!r} lacks the digitalSignature key usage")
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and bc.ca:
        raise ChainError(f"certificate {_name(leaf)!r} is a CA certificate, not a signer")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False


def build_path(leaf: x509.Certificate, intermediates: list[x509.Certificate],
               roots: list[x509.Certificate], at: dt.datetime | None = None) -> list[x509.Certificate]:
    """Return [leaf, …, root] or raise ChainError with the most specific reason found."""
    at = at or dt.datetime.now(dt.timezone.utc)
    if not roots:
        raise ChainError("no trust roots given")
    check_leaf(leaf)
    _check_common(leaf, at)
    root_ders = {_der(r) for r in roots}
    reasons: list[str] = []

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cur = path[-1]
        if _der(cur) in root_ders:
            return path
        if len(path) > MAX_DEPTH:
            return None
        below = len(path) - 1  # intermediates already under the next issuer
        for cand in roots + intermediates:
            if any(_der(cand) == _der(p) for p in path) or not _issued_by(cur, cand):
                continue
            try:
                _check_common(cand, at)
                _check_issuer(cand, below, is_root=_der(cand) in root_ders)
            except ChainError as e:
                reasons.append(str(e))
                continue
            found = extend(path + [cand])
            if found:
                return found
        return None

    path = extend([leaf])
    if path is None:
        if reasons:
            raise ChainError(reasons[0])
        raise ChainError(f"certificate {_name(leaf)!r} (issuer {leaf.issuer.rfc4514_string()}) "
                         "does not chain to a trusted root")
    return path


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
