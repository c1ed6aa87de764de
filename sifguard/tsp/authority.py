"""The site Time-Stamping Authority's core (RFC 3161 server side): a DER TimeStampReq in,
a DER TimeStampResp out. Pure: no I/O, no clock, no randomness — the caller passes the
time and the token's serial number.

A granted response carries a TimeStampToken: CMS SignedData (RFC 5652, version 3) over a
TSTInfo (version 1, our policy, the request's messageImprint, the caller's serial, genTime
in UTC to the second, accuracy in whole seconds, ordering false, the request's nonce when it
had one, no TSA name). The one SignerInfo names the TSA certificate by issuerAndSerialNumber
and signs the DER of its signed attributes: contentType id-ct-TSTInfo, messageDigest, and
signingCertificateV2 (ESS, RFC 5035: SHA-256 of the TSA certificate plus its issuer and serial).
Digest SHA-256 with EC and RSA keys (ECDSA / PKCS#1 v1.5), SHA-512 with Ed25519 (RFC 8419).
The certificates field holds the chain (TSA certificate and issuing intermediate) only when
the request says certReq.

Everything else is a rejection (status 2) with one failInfo bit and a one-line statusString:
badRequest (over 64 KiB, a version other than 1), badDataFormat (not a DER TimeStampReq, a
digest of the wrong length), badAlg (an imprint hash other than SHA-256/384/512 — SHA-1 is
refused — or with parameters other than absent/NULL), unacceptedPolicy (a reqPolicy other than
ours), unacceptedExtension (any request extension: we support none), systemFailure (the TSA
certificate is not valid at `now`).

Serial numbers: the caller never reuses one. `ca serve` draws a random positive 159-bit
integer per token (`sifguard.ca.profiles.random_serial`, like certificate serials), which is
unique across worker processes and restarts without a database write per request (a collision
among 2^40 tokens has probability below 2^-78).

asn1crypto does all the encoding and is imported when an Authority is built (the Slurm hooks
that import this package for its constants never pay for it); `cryptography` signs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from sifguard.errors import KeyMaterialError

MAX_REQUEST = 64 * 1024
ID_CT_TSTINFO = "1.2.840.113549.1.9.16.1.4"
IMPRINT_LENGTHS = {"sha256": 32, "sha384": 48, "sha512": 64}     # accepted messageImprint hashes
FAIL_INFOS = ("bad_alg", "bad_request", "bad_data_format", "unaccepted_policy", "unaccepted_extensions",
              "system_failure")                                    # the failInfo bits we send (asn1crypto names)

_OID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+\Z")


def check_policy_oid(value) -> str:
    """A TSA policy as a dotted OID (first arc 0-2, second below 40 under arcs 0 and 1);
    ValueError naming the problem otherwise."""
    if not isinstance(value, str) or not _OID.match(value):
        raise ValueError(f"TSA policy {value!r} is not a dotted object identifier (e.g. 1.3.6.1.4.1.99999.1)")
    arcs = [int(a) for a in value.split(".")]
    if arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"TSA policy {value!r} is not a valid object identifier (first arcs)")
    if len(value) > 200:
        raise ValueError(f"TSA policy {value!r} is longer than 200 characters")
    return value


class _Reject(Exception):
    def __init__(self, fail_info: str, text: str):
        super().__init__(text)
        self.fail_info, self.text = fail_info, text


class Authority:
    """A TSA: its certificate and private key, the chain tokens carry on certReq (TSA
    certificate first, then the issuing intermediate), the policy OID and the accuracy in
    seconds. Everything constant across tokens is encoded once, here."""

    def __init__(self, cert, key, chain, policy: str, accuracy: int = 1):
        from asn1crypto import cms, tsp, x509 as ax509  # noqa: F401 - tsp registers signingCertificateV2
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        self.policy = check_policy_oid(policy)
        if isinstance(accuracy, bool) or not isinstance(accuracy, int) or not 1 <= accuracy <= 3600:
            raise ValueError(f"TSA accuracy must be a whole number of seconds, 1-3600, not {accuracy!r}")
        self.accuracy = accuracy
        self.cert, self.key, self.chain = cert, key, tuple(chain)
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise KeyMaterialError("the TSA private key does not belong to the TSA certificate")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self._digest, self._sig_alg = "sha256", "sha256_ecdsa"
        elif isinstance(key, rsa.RSAPrivateKey):
            self._digest, self._sig_alg = "sha256", "sha256_rsa"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self._digest, self._sig_alg = "sha512", "ed25519"
        else:
            raise KeyMaterialError(f"unsupported TSA key type {type(key).__name__} (EC, RSA or Ed25519)")
        cert_der = cert.public_bytes(der)
        acert = ax509.Certificate.load(cert_der)
        self._sid = cms.SignerIdentifier({"issuer_and_serial_number": {
            "issuer": acert.issuer, "serial_number": acert.serial_number}})
        self._certificates = cms.CertificateSet(
            [cms.CertificateChoices({"certificate": _frozen(ax509.Certificate.load(c.public_bytes(der)))})
             for c in self.chain])
        self._signing_certificate = cms.CMSAttribute({"type": "signing_certificate_v2", "values": [{
            "certs": [{"cert_hash": hashlib.sha256(cert_der).digest(),        # hashAlgorithm SHA-256 (DEFAULT)
                       "issuer_serial": {"issuer": [ax509.GeneralName({"directory_name": acert.issuer})],
                                         "serial_number": acert.serial_number}}]}]})
        self._not_before, self._not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        self._sid, self._signing_certificate = _frozen(self._sid), _frozen(self._signing_certificate)

    # --- the one operation ---------------------------------------------------------------
    def respond(self, request_der: bytes, now: dt.datetime, serial: int) -> bytes:
        """The DER TimeStampResp for `request_der` at `now` (timezone-aware), the token
        numbered `serial` (positive, at most 160 bits, never used before)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if isinstance(serial, bool) or not isinstance(serial, int) or not 0 < serial < 1 << 160:
            raise ValueError("serial must be a positive integer of at most 160 bits")
        now = now.astimezone(dt.timezone.utc).replace(microsecond=0)
        try:
            req = self._check(request_der, now)
        except _Reject as r:
            return rejection(r.fail_info, r.text)
        return self._grant(req, now, serial)

    # --- checks ----------------------------------------------------------------------------
    def _check(self, request_der: bytes, now: dt.datetime) -> dict:
        """The request's fields, or _Reject."""
        if not isinstance(request_der, (bytes, bytearray, memoryview)):
            raise _Reject("bad_data_format", "the request is not bytes")
        if len(request_der) > MAX_REQUEST:
            raise _Reject("bad_request", f"the request is larger than {MAX_REQUEST // 1024} KiB")
        req = _parse(bytes(request_der))
        if req["version"] != 1:
            raise _Reject("bad_request", f"TimeStampReq version {req['version']} (only 1 is defined)")
        if req["extensions"]:
            raise _Reject("unaccepted_extensions", "request extensions are not supported")
        alg = req["hash_alg"]
        if alg not in IMPRINT_LENGTHS:
            raise _Reject("bad_alg", f"messageImprint hash {alg} is not accepted (SHA-256, SHA-384 or SHA-512)")
        if req["hash_params"] not in (None, b"\x05\x00"):
            raise _Reject("bad_alg", f"messageImprint {alg} has parameters (only absent or NULL)")
        if len(req["digest"]) != IMPRINT_LENGTHS[alg]:
            raise _Reject("bad_data_format", f"messageImprint is {len(req['digest'])} bytes, "
                                             f"{alg} digests are {IMPRINT_LENGTHS[alg]}")
        if req["policy"] is not None and req["policy"] != self.policy:
            raise _Reject("unaccepted_policy", f"policy {req['policy']} is not this TSA's ({self.policy})")
        if not self._not_before <= now <= self._not_after:
            raise _Reject("system_failure", "the TSA certificate is not valid now")
        return req

    # --- the token --------------------------------------------------------------------------
    def _grant(self, req: dict, now: dt.datetime, serial: int) -> bytes:
        from asn1crypto import cms, core, tsp
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

        imprint_alg = {"algorithm": req["hash_alg"]}
        if req["hash_params"] is not None:
            imprint_alg["parameters"] = core.Null()
        info = {"version": "v1", "policy": self.policy,
                "message_imprint": {"hash_algorithm": imprint_alg, "hashed_message": req["digest"]},
                "serial_number": serial, "gen_time": now, "accuracy": {"seconds": self.accuracy}}
        if req["nonce"] is not None:
            info["nonce"] = req["nonce"]
        tst_der = tsp.TSTInfo(info).dump()
        attrs = cms.CMSAttributes([
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.new(self._digest, tst_der).digest()]},
            self._signing_certificate])
        to_sign = attrs.dump()                 # the SET OF (tag 0x31), DER-sorted by asn1crypto
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            signature = self.key.sign(to_sign)
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            signature = self.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        signer_info = cms.SignerInfo({
            "version": "v1", "sid": self._sid, "digest_algorithm": {"algorithm": self._digest},
            "signed_attrs": attrs, "signature_algorithm": {"algorithm": self._sig_alg}, "signature": signature})
        signed = {
            "version": "v3",
            "digest_algorithms": [{"algorithm": self._digest}],
            "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(tst_der)},
            "signer_infos": [_frozen(signer_info)],
        }
        if req["cert_req"]:
            signed["certificates"] = self._certificates
        return _response_type()({
            "status": {"status": "granted"},
            "time_stamp_token": {"content_type": "signed_data", "content": cms.SignedData(signed)},
        }).dump()


def rejection(fail_info: str, text: str) -> bytes:
    """A DER TimeStampResp with status rejection, one failInfo bit (an asn1crypto
    PKIFailureInfo name, see FAIL_INFOS) and `text` as its statusString."""
    return _response_type()({"status": {"status": "rejection", "status_string": [text],
                                        "fail_info": {fail_info}}}).dump()


_RESPONSE_TYPE = None


_FROZEN_TYPES: dict = {}


def _frozen(value):
    """`value` (a finished part that no parent retags) as an instance of a subclass whose dump()
    returns its DER, computed once. asn1crypto re-encodes a whole subtree on the dump of any
    structure holding it, and forces that whenever a length ends in byte 0x80 (it takes the
    definite lengths 128, 384, … for indefinite ones): 20-40 ms a token, at random, for a
    SignerInfo or certificate of such a size. One subclass per asn1crypto type (asn1crypto
    keeps every class it has set up); its copies keep the DER."""
    base = type(value)
    cls = _FROZEN_TYPES.get(base)
    if cls is None:
        def dump(self, force=False):
            return self._frozen_der

        def _copy(self, other, copy_func):
            base._copy(self, other, copy_func)
            self._frozen_der = other._frozen_der

        cls = _FROZEN_TYPES[base] = type(f"Frozen{base.__name__}", (base,), {"dump": dump, "_copy": _copy})
    der = value.dump()
    out = cls.load(der)
    out._frozen_der = der
    return out


def _response_type():
    """TimeStampResp as RFC 3161 defines it: asn1crypto 1.5's makes timeStampToken
    mandatory, which a rejection omits."""
    global _RESPONSE_TYPE
    if _RESPONSE_TYPE is None:
        from asn1crypto import cms, core, tsp

        class TimeStampResp(core.Sequence):
            _fields = [("status", tsp.PKIStatusInfo),
                       ("time_stamp_token", cms.ContentInfo, {"optional": True})]
        _RESPONSE_TYPE = TimeStampResp
    return _RESPONSE_TYPE


def _parameters(alg) -> bytes | None:
    """The DER of an AlgorithmIdentifier's parameters, None when absent; asn1crypto refuses
    parameters other than NULL for the SHA-2 OIDs: those are reported as b"invalid" (badAlg)."""
    try:
        return alg["parameters"].dump() or None
    except (ValueError, TypeError):
        return b"invalid"


def _parse(der: bytes) -> dict:
    """Every field of a DER TimeStampReq, fully decoded, or _Reject(badDataFormat).
    asn1crypto decodes lazily: every field is read here, inside the one guard."""
    from asn1crypto import tsp
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        imprint = req["message_imprint"]
        alg = imprint["hash_algorithm"]
        out = {
            "version": int(req["version"]),
            "hash_alg": alg["algorithm"].native,
            "hash_params": _parameters(alg),
            "digest": imprint["hashed_message"].native,
            "policy": req["req_policy"].dotted if req["req_policy"].native is not None else None,
            "nonce": req["nonce"].native,
            "cert_req": bool(req["cert_req"].native),
            "extensions": req["extensions"].native,
        }
        if not isinstance(out["digest"], bytes) or not isinstance(out["hash_alg"], str):
            raise ValueError("malformed messageImprint")
        return out
    except _Reject:
        raise
    except Exception:  # noqa: BLE001 - any decoding failure of untrusted bytes is badDataFormat
        raise _Reject("bad_data_format", "not a DER TimeStampReq") from None
