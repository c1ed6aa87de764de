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
        self._asn1 = None

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
        der = self._signed(q, kind, revoked, this_update, next_update, now)
        return Answer(der, status, this_update, next_update, cacheable=q.nonce is None and status != "unknown")

    def _signed(self, q: Question, status: str, revoked, this_update: dt.datetime,
                next_update: dt.datetime, produced_at: dt.datetime) -> bytes:
        """The DER OCSPResponse: a BasicOCSPResponse built with asn1crypto, since cryptography's
        builder cannot add singleExtensions (archiveCutoff, invalidityDate); signed by cryptography."""
        from asn1crypto import core, ocsp as aocsp
        static = self._static()
        if status == "revoked":
            rtime, reason, _ = revoked
            info = {"revocation_time": rtime}
            if reason is not None:
                info["revocation_reason"] = _ASN1_REASON[reason]
            cert_status = aocsp.CertStatus(name="revoked", value=info)
        else:
            cert_status = aocsp.CertStatus(name=status, value=core.Null())
        exts = []
        if self.archive_cutoff is not None:
            exts.append({"extn_id": "archive_cutoff", "critical": False,
                         "extn_value": core.GeneralizedTime(self.archive_cutoff)})
        if revoked is not None and revoked[2] is not None:
            exts.append({"extn_id": "invalidity_date", "critical": False,
                         "extn_value": core.GeneralizedTime(revoked[2])})
        single = {"cert_id": {"hash_algorithm": {"algorithm": q.alg, "parameters": core.Null()},
                              "issuer_name_hash": q.issuer_name_hash, "issuer_key_hash": q.issuer_key_hash,
                              "serial_number": q.serial},
                  "cert_status": cert_status, "this_update": this_update, "next_update": next_update}
        if exts:
            single["single_extensions"] = exts
        data = {"responder_id": static["responder_id"], "produced_at": produced_at, "responses": [single]}
        if q.nonce is not None:
            data["response_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": q.nonce}]
        tbs = aocsp.ResponseData(data)
        signature = _sign(self.key, tbs.dump())
        basic = {"tbs_response_data": tbs, "signature_algorithm": static["algorithm"], "signature": signature}
        if static["certs"]:
            basic["certs"] = static["certs"]
        return aocsp.OCSPResponse({"response_status": "successful", "response_bytes": {
            "response_type": "basic_ocsp_response", "response": aocsp.BasicOCSPResponse(basic)}}).dump()

    def _static(self) -> dict:
        """What every answer of this signer repeats, converted to asn1crypto once."""
        if self._asn1 is None:
            from asn1crypto import ocsp as aocsp, x509 as ax509
            key_id = x509.SubjectKeyIdentifier.from_public_key(self.cert.public_key()).digest
            certs = []
            if self.cert is not self.issuer:
                certs = [ax509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))]
            self._asn1 = {"responder_id": aocsp.ResponderId(name="by_key", value=key_id),
                          "algorithm": _signature_algorithm(self.key), "certs": certs}
        return self._asn1


# RFC 5280 reason names -> asn1crypto's CRLReason names
_ASN1_REASON = {"unspecified": "unspecified", "keyCompromise": "key_compromise", "cACompromise": "ca_compromise",
                "affiliationChanged": "affiliation_changed", "superseded": "superseded",
                "cessationOfOperation": "cessation_of_operation", "certificateHold": "certificate_hold",
                "removeFromCRL": "remove_from_crl", "privilegeWithdrawn": "privilege_withdrawn",
                "aACompromise": "aa_compromise"}


def _signature_algorithm(key) -> dict:
    """AlgorithmIdentifier of what `_sign` makes with this key (sig_hash picks the hash)."""
    from asn1crypto import core
    h = sig_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"algorithm": "ed25519"}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"algorithm": f"{h.name}_ecdsa"}
    if isinstance(key, rsa.RSAPrivateKey):
        return {"algorithm": f"{h.name}_rsa", "parameters": core.Null()}
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
