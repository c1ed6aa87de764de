"""OCSP responses (RFC 6960 / RFC 5019) built from a request and the CA's records.

Pure: request bytes and a status lookup in, response bytes and caching facts out.
The HTTP side (sifguard.ocsp.responder) decides when to reuse a pre-signed answer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from sifguard.ca.profiles import REASONS, sig_hash

MAX_REQUEST = 64 * 1024
HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}

# serial -> (status, revoked_at, reason) or None when the CA never issued it (answered `unknown`)
StatusLookup = Callable[[int], "tuple[str, int | None, str | None] | None"]


@dataclass(frozen=True)
class Answer:
    der: bytes
    status: str                       # good | revoked | unknown | unauthorized | malformedRequest | internalError
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    cacheable: bool = False           # no nonce: the same bytes may answer the same question again


def unsuccessful(status: ocsp.OCSPResponseStatus) -> Answer:
    return Answer(ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER),
                  status.name.lower() if status.name != "MALFORMED_REQUEST" else "malformedRequest")


MALFORMED = unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = Answer(unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).der, "unauthorized")
INTERNAL = Answer(unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR).der, "internalError")


@dataclass(frozen=True)
class Question:
    """What a parsed request asks (a single CertID)."""

    serial: int
    alg: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: bytes | None


def parse_request(der: bytes) -> Question | None:
    """None for anything that is not a well-formed single-certificate request."""
    if not der or len(der) > MAX_REQUEST:
        return None
    try:
        req = ocsp.load_der_ocsp_request(der)
        alg = req.hash_algorithm.name
        nonce = None
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                nonce = ext.value.nonce
        return Question(req.serial_number, alg, req.issuer_name_hash, req.issuer_key_hash, nonce)
    except Exception:  # noqa: BLE001 - hostile bytes: whatever the parser raises means "malformed"
        # cryptography raises ValueError for malformed DER and multi-request bodies,
        # UnsupportedAlgorithm for odd hashes, and so on: all of it is "malformedRequest".
        return None


def issuer_hashes(issuer: x509.Certificate, alg: str) -> tuple[bytes, bytes]:
    h = HASHES[alg]
    name_der = issuer.subject.public_bytes()
    d1 = hashes.Hash(h())
    d1.update(name_der)
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # issuerKeyHash covers the BIT STRING contents of subjectPublicKey, not the whole SPKI
    key_bits = _spki_bitstring(spki)
    d2 = hashes.Hash(h())
    d2.update(key_bits)
    return d1.finalize(), d2.finalize()


def _spki_bitstring(spki: bytes) -> bytes:
    """Contents (after the unused-bits byte) of the subjectPublicKey BIT STRING."""
    def tlv(b: bytes, i: int) -> tuple[int, int, int]:
        tag, n = b[i], b[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(b[i:i + k], "big")
            i += k
        return tag, i, n
    _, i, _ = tlv(spki, 0)             # SEQUENCE
    _, j, n = tlv(spki, i)             # AlgorithmIdentifier
    tag, k, m = tlv(spki, j + n)       # BIT STRING
    assert tag == 0x03
    return spki[k + 1:k + m]


@dataclass
class Signer:
    """Who signs responses: the delegated responder (default) or the issuing CA itself."""

    issuer: x509.Certificate
    key: object
    cert: x509.Certificate            # responder cert, or the issuer when signing as issuer
    validity: dt.timedelta

    def __post_init__(self):
        self._hashes = {alg: issuer_hashes(self.issuer, alg) for alg in HASHES}

    def serves(self, q: Question) -> bool:
        return q.alg in self._hashes and self._hashes[q.alg] == (q.issuer_name_hash, q.issuer_key_hash)

    def answer(self, q: Question, lookup: StatusLookup, now: dt.datetime) -> Answer:
        """`unauthorized` (unsigned) for an issuer this signer does not serve; for its own
        issuer a signed answer: `good`, `revoked`, or `unknown` for a serial it never issued
        (RFC 6960 §2.2) — a signed `unknown` is never cacheable, so it is not pre-signed."""
        if not self.serves(q):
            return UNAUTHORIZED
        rec = lookup(q.serial)
        status, revoked_at, reason = rec if rec is not None else ("unknown", None, None)
        this_update = now - dt.timedelta(minutes=1)   # small back-dating for client clock skew
        next_update = now + self.validity
        if status == "unknown":
            cert_status, rtime, rreason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif status == "revoked":
            cert_status = ocsp.OCSPCertStatus.REVOKED
            rtime = dt.datetime.fromtimestamp(revoked_at, dt.timezone.utc)
            this_update = max(this_update, min(rtime, now))   # never claim knowledge from before the revocation
            rreason = REASONS.get(reason) if reason and reason != "unspecified" else None
        else:
            cert_status, rtime, rreason = ocsp.OCSPCertStatus.GOOD, None, None
        b = (ocsp.OCSPResponseBuilder()
             .add_response_by_hash(q.issuer_name_hash, q.issuer_key_hash, q.serial, HASHES[q.alg](),
                                   cert_status, this_update, next_update, rtime, rreason)
             .responder_id(ocsp.OCSPResponderEncoding.HASH, self.cert))
        if self.cert is not self.issuer:
            b = b.certificates([self.cert])
        if q.nonce is not None:
            b = b.add_extension(x509.OCSPNonce(q.nonce), critical=False)
        resp = b.sign(self.key, sig_hash(self.key))
        return Answer(resp.public_bytes(serialization.Encoding.DER), status, this_update, next_update,
                      cacheable=q.nonce is None and status != "unknown")


def minimal_request(cert_serial: int, issuer: x509.Certificate, alg: str) -> bytes:
    """The DER a client sends without nonce (used by the static export's file names)."""
    name_hash, key_hash = issuer_hashes(issuer, alg)
    return (ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(name_hash, key_hash, cert_serial, HASHES[alg]())
            .build().public_bytes(serialization.Encoding.DER))
