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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp

from sifguard.ca import ocsp_der as der
from sifguard.ca.profiles import sig_hash

MAX_REQUEST = 64 * 1024
HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}

# serial -> (status, revoked_at, reason, invalidity_date) or None when the CA never issued it
# (answered `unknown`); times are unix seconds
StatusLookup = Callable[[int], "tuple[str, int | None, str | None, int | None] | None"]


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
    """Who signs responses: the delegated responder (default) or the issuing CA itself.
    `archive_cutoff`: since when the CA keeps revocation information of expired certificates
    (RFC 6960 §4.4.4) — every successful answer says so, so that a `good` about an expired
    certificate is still evidence."""

    issuer: x509.Certificate
    key: object
    cert: x509.Certificate            # responder cert, or the issuer when signing as issuer
    validity: dt.timedelta
    archive_cutoff: dt.datetime | None = None

    def __post_init__(self):
        self._hashes = {alg: issuer_hashes(self.issuer, alg) for alg in HASHES}
        self._der = None

    def serves(self, q: Question) -> bool:
        return q.alg in self._hashes and self._hashes[q.alg] == (q.issuer_name_hash, q.issuer_key_hash)

    def answer(self, q: Question, lookup: StatusLookup, now: dt.datetime) -> Answer:
        """`unauthorized` (unsigned) for an issuer this signer does not serve; for its own
        issuer a signed answer: `good`, `revoked`, or `unknown` for a serial it never issued
        (RFC 6960 §2.2) — a signed `unknown` is never cacheable, so it is not pre-signed."""
        if not self.serves(q):
            return UNAUTHORIZED
        rec = lookup(q.serial)
        status, revoked_at, reason, *rest = rec if rec is not None else ("unknown", None, None)
        invalidity = rest[0] if rest else None
        now = now.astimezone(dt.timezone.utc).replace(microsecond=0)
        this_update = now - dt.timedelta(minutes=1)   # small back-dating for client clock skew
        next_update = now + self.validity
        revoked = None
        if status == "revoked":
            rtime = dt.datetime.fromtimestamp(revoked_at, dt.timezone.utc)
            this_update = max(this_update, min(rtime, now))   # never claim knowledge from before the revocation
            revoked = (rtime, reason if reason and reason != "unspecified" else None,
                       None if invalidity is None else dt.datetime.fromtimestamp(invalidity, dt.timezone.utc))
        kind = status if status in ("unknown", "revoked") else "good"
        body = self._signed(q, kind, revoked, this_update, next_update, now)
        return Answer(body, status, this_update, next_update, cacheable=q.nonce is None and status != "unknown")

    def _signed(self, q: Question, status: str, revoked, this_update: dt.datetime,
                next_update: dt.datetime, produced_at: dt.datetime) -> bytes:
        """The DER OCSPResponse (see ocsp_der: cryptography's builder cannot add singleExtensions)."""
        static = self._static()
        exts = list(static["single_extensions"])
        if status == "revoked":
            rtime, reason, invalidity = revoked
            cert_status = der.cert_status("revoked", rtime, reason)
            if invalidity is not None:
                exts.append(der.extension(der.INVALIDITY_DATE, der.generalized_time(invalidity)))
        else:
            cert_status = der.cert_status(status)
        single = der.single_response(der.cert_id(q.alg, q.issuer_name_hash, q.issuer_key_hash, q.serial),
                                     cert_status, this_update, next_update, exts)
        tbs = der.response_data(static["key_hash"], produced_at, [single], q.nonce)
        return der.ocsp_response(tbs, static["algorithm"], _sign(self.key, tbs), static["certs"])

    def _static(self) -> dict:
        """What every answer of this signer repeats, encoded once."""
        if self._der is None:
            certs = [] if self.cert is self.issuer else [self.cert.public_bytes(serialization.Encoding.DER)]
            exts = []
            if self.archive_cutoff is not None:
                exts.append(der.extension(der.ARCHIVE_CUTOFF, der.generalized_time(self.archive_cutoff)))
            self._der = {"key_hash": x509.SubjectKeyIdentifier.from_public_key(self.cert.public_key()).digest,
                         "algorithm": _signature_algorithm(self.key), "certs": certs, "single_extensions": exts}
        return self._der


def _signature_algorithm(key) -> bytes:
    """AlgorithmIdentifier of what `_sign` makes with this key (sig_hash picks the hash)."""
    h = sig_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return der.signature_algorithm("ed25519", None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return der.signature_algorithm("ecdsa", h.name)
    if isinstance(key, rsa.RSAPrivateKey):
        return der.signature_algorithm("rsa", h.name)
    raise TypeError(f"unsupported responder key {type(key).__name__}")


def _sign(key, data: bytes) -> bytes:
    h = sig_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(h))
    return key.sign(data, padding.PKCS1v15(), h)


def minimal_request(cert_serial: int, issuer: x509.Certificate, alg: str) -> bytes:
    """The DER a client sends without nonce (used by the static export's file names)."""
    name_hash, key_hash = issuer_hashes(issuer, alg)
    return (ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(name_hash, key_hash, cert_serial, HASHES[alg]())
            .build().public_bytes(serialization.Encoding.DER))
