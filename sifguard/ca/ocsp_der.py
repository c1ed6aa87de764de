"""DER of a signed OCSP response (RFC 6960 §4.2.1) whose SingleResponse carries
singleExtensions, composed from its parts. Pure functions, bytes in and out.

cryptography's OCSPResponseBuilder cannot add singleExtensions (archiveCutoff,
invalidityDate). asn1crypto can build the structure, but costs about 0.5 ms an answer —
25 times an ECDSA signature, which made signing a fresh answer four times slower — while
the structure is fixed and small. So it is put together here from DER elements, and
tests/test_revocation_reasons.py checks it byte for byte against asn1crypto building the
same response, and parses it with cryptography and openssl.
"""

from __future__ import annotations

import datetime as dt

NULL = b"\x05\x00"
SUCCESSFUL = b"\x0a\x01\x00"        # OCSPResponseStatus successful (ENUMERATED 0)


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(n: int) -> bytes:
    """A non-negative INTEGER (two's complement, minimal: a leading 0 when the top bit is set)."""
    if n < 0:
        raise ValueError("negative INTEGER")
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def octet_string(b: bytes) -> bytes:
    return tlv(0x04, b)


def generalized_time(t: dt.datetime) -> bytes:
    """YYYYMMDDHHMMSSZ: UTC, whole seconds (RFC 5280 §4.1.2.5.2)."""
    u = t.astimezone(dt.timezone.utc)
    return tlv(0x18, f"{u.year:04d}{u:%m%d%H%M%S}Z".encode())


def extension(extn_id: str, value: bytes) -> bytes:
    """A non-critical Extension (critical DEFAULT FALSE is left out in DER)."""
    return seq(oid(extn_id), octet_string(value))


HASH_OIDS = {"sha1": "1.3.14.3.2.26", "sha256": "2.16.840.1.101.3.4.2.1",
             "sha384": "2.16.840.1.101.3.4.2.2", "sha512": "2.16.840.1.101.3.4.2.3"}
BASIC = "1.3.6.1.5.5.7.48.1.1"            # id-pkix-ocsp-basic
NONCE = "1.3.6.1.5.5.7.48.1.2"            # id-pkix-ocsp-nonce
ARCHIVE_CUTOFF = "1.3.6.1.5.5.7.48.1.6"   # id-pkix-ocsp-archive-cutoff
INVALIDITY_DATE = "2.5.29.24"             # id-ce-invalidityDate
REASON_CODES = {"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
                "superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "removeFromCRL": 8,
                "privilegeWithdrawn": 9, "aACompromise": 10}


def cert_id(alg: str, name_hash: bytes, key_hash: bytes, serial: int) -> bytes:
    return seq(seq(oid(HASH_OIDS[alg]), NULL), octet_string(name_hash), octet_string(key_hash), integer(serial))


def cert_status(status: str, revoked_at: dt.datetime | None = None, reason: str | None = None) -> bytes:
    """good [0] IMPLICIT NULL | revoked [1] IMPLICIT RevokedInfo | unknown [2] IMPLICIT NULL."""
    if status == "good":
        return b"\x80\x00"
    if status == "unknown":
        return b"\x82\x00"
    info = generalized_time(revoked_at)
    if reason in REASON_CODES:     # an unknown name (none is stored) leaves the code out, as no reason
        info += tlv(0xA0, tlv(0x0A, bytes((REASON_CODES[reason],))))   # [0] EXPLICIT CRLReason
    return tlv(0xA1, info)


def single_response(cid: bytes, status: bytes, this_update: dt.datetime, next_update: dt.datetime | None,
                    extensions: list[bytes]) -> bytes:
    body = cid + status + generalized_time(this_update)
    if next_update is not None:
        body += tlv(0xA0, generalized_time(next_update))
    if extensions:
        body += tlv(0xA1, seq(*extensions))
    return seq(body)


def response_data(responder_key_hash: bytes, produced_at: dt.datetime, singles: list[bytes],
                  nonce: bytes | None) -> bytes:
    """tbsResponseData (version v1 is the DEFAULT, left out); responderID byKey."""
    body = tlv(0xA2, octet_string(responder_key_hash)) + generalized_time(produced_at) + seq(*singles)
    if nonce is not None:    # extnValue holds the nonce as an OCTET STRING, as cryptography and OpenSSL write it
        body += tlv(0xA1, seq(extension(NONCE, octet_string(nonce))))
    return seq(body)


def ocsp_response(tbs: bytes, signature_algorithm: bytes, signature: bytes, certs: list[bytes]) -> bytes:
    """OCSPResponse { successful, ResponseBytes { id-pkix-ocsp-basic, BasicOCSPResponse } }."""
    basic = tbs + signature_algorithm + tlv(0x03, b"\x00" + signature)
    if certs:
        basic += tlv(0xA0, seq(*certs))
    return seq(SUCCESSFUL + tlv(0xA0, seq(oid(BASIC), octet_string(seq(basic)))))


def signature_algorithm(kind: str, hash_name: str | None) -> bytes:
    """AlgorithmIdentifier: ECDSA and Ed25519 without parameters, RSA PKCS#1 v1.5 with NULL."""
    if kind == "ed25519":
        return seq(oid("1.3.101.112"))
    if kind == "ecdsa":
        return seq(oid({"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
                        "sha512": "1.2.840.10045.4.3.4"}[hash_name]))
    if kind == "rsa":
        return seq(oid({"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
                        "sha512": "1.2.840.113549.1.1.13"}[hash_name]), NULL)
    raise ValueError(f"unsupported signature algorithm {kind}")
