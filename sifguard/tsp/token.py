"""RFC 3161 time-stamp tokens on the verifier's side: what a token says, and whether it counts.

Pure: token bytes, the signed message and certificates in; a `TrustedTime` or a
`TimestampError` naming the first check that failed out. A token counts when

1. it is a CMS SignedData over an id-ct-TSTInfo with exactly one SignerInfo, whose
   signed attributes hold the content type and the digest of the TSTInfo;
2. its messageImprint is the digest (SHA-256/384/512) of the message it is said to
   time-stamp (for sifguard: one DSSE signature value);
3. the SignerInfo's signature verifies with the TSA certificate it names, and the ESS
   signing-certificate attribute (v2, RFC 5816/5035, or v1) binds exactly that certificate —
   so no other certificate with the same key can stand in for it;
4. the TSA certificate has the critical, time-stamping-only EKU of RFC 3161 §2.3, genTime
   lies within its validity, and it chains to the TSA roots *at genTime* (the same bounded
   path search as signer certificates; a CA's EKU is not nested, as OpenSSL's `ts -verify`).

Whether the TSA's certificate was revoked (and why, and when) is the decision core's
question: it holds the revocation answers (enforce/core.py).

asn1crypto parses (imported on first use: ~40 ms the Slurm hooks never pay when no token
is present); every digest and signature check is pyca/cryptography's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from sifguard.errors import SignatureError
from sifguard.x509 import keys
from sifguard.x509.chain import DEFAULT_LIMITS, ChainError, PathLimits, SignatureMemo, build_path

MAX_TOKEN_BYTES = 64 << 10
MAX_TOKEN_CERTS = 16         # certificates read from one token (verify() applies PathLimits.max_embedded too)
TST_INFO = "1.2.840.113549.1.9.16.1.4"
DIGESTS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512, "sha1": hashes.SHA1}


class TimestampError(SignatureError):
    """A token that does not count, with the reason (a verification outcome, not a crash)."""


@dataclass(frozen=True)
class Token:
    """One parsed token (nothing verified yet)."""

    der: bytes
    gen_time: dt.datetime
    accuracy: dt.timedelta            # zero when the token states none
    policy: str
    serial: int
    imprint_alg: str                  # sha256 | sha384 | sha512 | other names (refused at verify)
    imprint: bytes
    nonce: int | None
    certificates: tuple[x509.Certificate, ...]
    # the signature and what it covers
    signer_issuer: bytes | None       # issuerAndSerialNumber sid: issuer Name DER ...
    signer_serial: int | None         # ... and serial
    signer_ski: bytes | None          # subjectKeyIdentifier sid
    digest_alg: str
    signature_algo: str               # rsassa_pkcs1v15 | rsassa_pss | ecdsa | ed25519 | ...
    signature_hash: str | None
    pss_params: tuple | None          # (hash name, salt length) for RSASSA-PSS
    signature: bytes
    signed_attrs: bytes               # DER as a SET (what was signed)
    content_type_attr: str | None
    message_digest_attr: bytes | None
    econtent: bytes                   # the TSTInfo DER the message digest covers
    ess: tuple[tuple[str, bytes, bytes | None, int | None], ...]   # (hash alg, cert hash, issuer Name DER, serial)

    @property
    def earliest(self) -> dt.datetime:
        return self.gen_time - self.accuracy

    @property
    def latest(self) -> dt.datetime:
        return self.gen_time + self.accuracy


@dataclass(frozen=True)
class TrustedTime:
    """A token that counts: when the message existed, and who says so."""

    gen_time: dt.datetime
    accuracy: dt.timedelta
    policy: str
    serial: int
    tsa_path: tuple[x509.Certificate, ...]     # TSA certificate → root, validated at genTime

    @property
    def latest(self) -> dt.datetime:
        """The latest instant the token allows: "existed before" comparisons use it (a
        negative accuracy, which parse() refuses, never moves it before genTime)."""
        return self.gen_time + max(self.accuracy, dt.timedelta(0))

    @property
    def tsa(self) -> str:
        return self.tsa_path[0].subject.rfc4514_string()

    def as_dict(self) -> dict:
        return {"gen_time": _iso(self.gen_time), "accuracy_ms": int(self.accuracy.total_seconds() * 1000),
                "tsa": self.tsa, "policy": self.policy, "serial": f"{self.serial:X}"}

    def as_record(self) -> dict:
        """JSON-ready and exact (microseconds), for a findings record: from_record() gives it back."""
        from cryptography.hazmat.primitives.serialization import Encoding
        return {"gen_time_us": (self.gen_time - EPOCH) // dt.timedelta(microseconds=1),
                "accuracy_us": self.accuracy // dt.timedelta(microseconds=1), "policy": self.policy,
                "serial": f"{self.serial:X}",
                "tsa_path": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in self.tsa_path]}

    @classmethod
    def from_record(cls, d: dict) -> "TrustedTime":
        """ValueError (or TypeError/KeyError) for anything but what as_record() made."""
        gen, acc, path = d["gen_time_us"], d["accuracy_us"], d["tsa_path"]
        us = dt.timedelta(microseconds=1)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (gen, acc)) \
                or not 0 <= acc <= (MAX_ACCURACY + dt.timedelta(seconds=1)) // us \
                or not 0 <= gen <= (LATEST_RECORDED - EPOCH) // us \
                or not isinstance(path, list) or not 1 <= len(path) <= 16 or not isinstance(d["policy"], str):
            raise ValueError("not a recorded trusted time")
        return cls(EPOCH + dt.timedelta(microseconds=gen), dt.timedelta(microseconds=acc), d["policy"],
                   int(d["serial"], 16),
                   tuple(x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in path))


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST_RECORDED = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)   # genTime ± accuracy never overflows


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


MAX_ACCURACY = dt.timedelta(days=366)   # beyond: a token dating nothing (and gen ± accuracy may overflow)


def _accuracy(acc) -> dt.timedelta:
    """RFC 3161 §2.4.2: seconds >= 0, millis and micros 1..999 (0 tolerated). A negative
    accuracy would move the latest instant a token allows before its genTime (backdating
    every "made before the revocation" comparison); a huge one overflows datetime."""
    if acc is None or acc.native is None:
        return dt.timedelta(0)
    n = acc.native
    sec, ms, us = n.get("seconds") or 0, n.get("millis") or 0, n.get("micros") or 0
    if sec < 0 or not 0 <= ms <= 999 or not 0 <= us <= 999 or sec > MAX_ACCURACY.total_seconds():
        raise TimestampError(f"time-stamp accuracy out of range (seconds {sec}, millis {ms}, micros {us})")
    return dt.timedelta(seconds=sec, milliseconds=ms, microseconds=us)


def parse(der: bytes) -> Token:
    """The fields of a token (a DER ContentInfo). TimestampError for anything malformed."""
    if not isinstance(der, (bytes, bytearray)) or not der:
        raise TimestampError("time-stamp token is empty")
    if len(der) > MAX_TOKEN_BYTES:
        raise TimestampError(f"time-stamp token is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        return _parse(bytes(der))
    except TimestampError:
        raise
    except Exception as e:  # noqa: BLE001 - hostile bytes: any parser failure means "malformed"
        raise TimestampError(f"malformed time-stamp token ({type(e).__name__})") from None


def _signed_bytes(der: bytes) -> tuple[bytes, bytes]:
    """(TSTInfo DER, signed attributes as a SET OF) exactly as they are in the token."""
    from sifguard.tsp import der as D
    ci = D.children(D.element(der))                    # contentType, [0] content
    sd = D.children(D.children(ci[1])[0])              # SignedData fields
    eci = D.children(sd[2])                            # eContentType, [0] eContent
    octets = D.children(eci[1])[0]
    if octets.tag != 0x04:
        raise TimestampError("the TSTInfo is not a primitive OCTET STRING")
    signer_infos = D.children(sd[-1])
    if len(signer_infos) != 1:
        raise TimestampError(f"time-stamp token has {len(signer_infos)} signers (exactly one expected)")
    fields = D.children(signer_infos[0])
    attrs = next((f for f in fields if f.tag == 0xA0), None)
    if attrs is None:
        raise TimestampError("time-stamp token has no signed attributes (RFC 3161 needs the ESS signing certificate)")
    return octets.contents, b"\x31" + attrs.raw[1:]    # signed as an explicit SET OF (RFC 5652 §5.4)


def _parse(der: bytes) -> Token:
    from asn1crypto import cms, tsp   # noqa: F401 - tsp registers TSTInfo and the ESS attributes
    ci = cms.ContentInfo.load(der, strict=True)
    if ci["content_type"].native != "signed_data":
        raise TimestampError("time-stamp token is not CMS SignedData")
    sd = ci["content"]
    eci = sd["encap_content_info"]
    if eci["content_type"].dotted != TST_INFO:
        raise TimestampError("time-stamp token does not hold a TSTInfo")
    raw = eci["content"]
    if raw is None or raw.native is None:
        raise TimestampError("time-stamp token has no TSTInfo content")
    econtent, signed = _signed_bytes(der)
    tst = tsp.TSTInfo.load(econtent, strict=True)
    sis = list(sd["signer_infos"])
    if len(sis) != 1:
        raise TimestampError(f"time-stamp token has {len(sis)} signers (exactly one expected)")
    si = sis[0]
    certs = []
    choices = sd["certificates"] or []
    if len(choices) > MAX_TOKEN_CERTS:     # counted before any is loaded (each load costs ~25 µs)
        raise TimestampError(f"time-stamp token embeds {len(choices)} certificates (at most {MAX_TOKEN_CERTS} read)")
    for c in choices:
        if c.name != "certificate":
            continue
        try:
            cert = x509.load_der_x509_certificate(c.chosen.dump())
            # cryptography parses names, extensions and the key lazily: read what the checks
            # read now, so a certificate that fails later (the set is not signed: anyone can
            # add one) is dropped here instead of raising in the middle of verify()
            cert.issuer.public_bytes(), cert.subject.public_bytes(), list(cert.extensions), cert.public_key()
            cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number  # noqa: B018
        except Exception:  # noqa: BLE001 - hostile bytes: unusable, can vouch for nothing
            continue
        certs.append(cert)
    sid = si["sid"]
    issuer_der = serial = ski = None
    if sid.name == "issuer_and_serial_number":
        issuer_der, serial = sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native
    else:
        ski = sid.chosen.native
    attrs = si["signed_attrs"]
    if attrs is None or not len(attrs):
        raise TimestampError("time-stamp token has no signed attributes (RFC 3161 needs the ESS signing certificate)")
    ctype = mdigest = None
    ess = []
    for a in attrs:
        name = a["type"].native
        vals = list(a["values"])
        if name == "content_type":
            ctype = vals[0].dotted if len(vals) == 1 else None
        elif name == "message_digest":
            mdigest = vals[0].native if len(vals) == 1 else None
        elif name in ("signing_certificate", "signing_certificate_v2"):
            for v in vals:
                for cid in v["certs"]:
                    alg = "sha1" if name == "signing_certificate" else cid["hash_algorithm"]["algorithm"].native
                    iss = cid["issuer_serial"]
                    i_der = i_serial = None
                    if iss.native is not None:
                        names = [g for g in iss["issuer"] if g.name == "directory_name"]
                        i_der = names[0].chosen.untag().dump() if names else b""   # [4] EXPLICIT Name
                        i_serial = iss["serial_number"].native
                    ess.append((alg, cid["cert_hash"].native, i_der, i_serial))
                break                      # the first ESSCertID names the signer (RFC 5035 §5.4)
    sig_alg = si["signature_algorithm"]
    algo = sig_alg.signature_algo
    try:
        sig_hash = sig_alg.hash_algo
    except ValueError:
        sig_hash = None
    pss = None
    if algo == "rsassa_pss":
        p = sig_alg["parameters"]
        pss = (p["hash_algorithm"]["algorithm"].native, p["salt_length"].native)
    acc = tst["accuracy"]
    gen = tst["gen_time"].native
    if gen.tzinfo is None:
        gen = gen.replace(tzinfo=dt.timezone.utc)
    mi = tst["message_imprint"]
    accuracy = _accuracy(acc)
    try:
        gen.astimezone(dt.timezone.utc) - accuracy, gen.astimezone(dt.timezone.utc) + accuracy
    except OverflowError:
        raise TimestampError("time-stamp genTime ± accuracy lies outside the representable dates") from None
    return Token(
        der=der, gen_time=gen.astimezone(dt.timezone.utc), accuracy=accuracy, policy=tst["policy"].dotted,
        serial=tst["serial_number"].native, imprint_alg=mi["hash_algorithm"]["algorithm"].native,
        imprint=mi["hashed_message"].native, nonce=tst["nonce"].native, certificates=tuple(certs),
        signer_issuer=issuer_der, signer_serial=serial, signer_ski=ski,
        digest_alg=si["digest_algorithm"]["algorithm"].native, signature_algo=algo, signature_hash=sig_hash,
        pss_params=pss, signature=si["signature"].native, signed_attrs=signed, content_type_attr=ctype,
        message_digest_attr=mdigest, econtent=econtent, ess=tuple(ess))


# --- verification ----------------------------------------------------------------------
def check_imprint(tok: Token, message: bytes) -> None:
    h = DIGESTS.get(tok.imprint_alg)
    if h is None:
        raise TimestampError(f"time-stamp imprint uses {tok.imprint_alg} (SHA-256, -384 or -512 accepted)")
    if h(message).digest() != tok.imprint:
        raise TimestampError("time-stamp token is over another signature (messageImprint does not match)")


def _signer_cert(tok: Token, pool) -> x509.Certificate:
    for c in pool:
        if tok.signer_serial is not None:
            if c.serial_number == tok.signer_serial and c.issuer.public_bytes() == tok.signer_issuer:
                return c
        elif tok.signer_ski is not None:
            try:
                ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == tok.signer_ski:
                return c
    raise TimestampError("the TSA certificate that signed the token is neither in it nor among the TSA roots")


def _check_signature(tok: Token, cert: x509.Certificate) -> None:
    if tok.content_type_attr != TST_INFO:
        raise TimestampError("time-stamp token's signed content-type attribute is not id-ct-TSTInfo")
    h = DIGESTS.get(tok.digest_alg)
    if h is None:
        raise TimestampError(f"time-stamp token digest algorithm {tok.digest_alg} is not accepted")
    if tok.message_digest_attr != h(tok.econtent).digest():
        raise TimestampError("time-stamp token's TSTInfo does not match its signed message digest")
    pub = cert.public_key()
    try:
        if tok.signature_algo == "ed25519" and isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(tok.signature, tok.signed_attrs)
        elif tok.signature_algo == "ecdsa" and isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(tok.signature, tok.signed_attrs, ec.ECDSA(_HASHES[tok.signature_hash or tok.digest_alg]()))
        elif tok.signature_algo == "rsassa_pkcs1v15" and isinstance(pub, rsa.RSAPublicKey):
            pub.verify(tok.signature, tok.signed_attrs, padding.PKCS1v15(),
                       _HASHES[tok.signature_hash or tok.digest_alg]())
        elif tok.signature_algo == "rsassa_pss" and isinstance(pub, rsa.RSAPublicKey) and tok.pss_params:
            hn, salt = tok.pss_params
            pub.verify(tok.signature, tok.signed_attrs, padding.PSS(padding.MGF1(_HASHES[hn]()), salt), _HASHES[hn]())
        else:
            raise TimestampError(f"time-stamp signature algorithm {tok.signature_algo} does not fit the TSA key")
    except (InvalidSignature, KeyError, ValueError, TypeError, UnsupportedAlgorithm):
        raise TimestampError("time-stamp token signature does not verify with the TSA certificate") from None


def _check_ess(tok: Token, cert: x509.Certificate) -> None:
    if not tok.ess:
        raise TimestampError("time-stamp token lacks the ESS signing-certificate attribute")
    alg, digest, issuer_der, serial = tok.ess[0]
    h = _HASHES.get(alg)
    if h is None:
        raise TimestampError(f"ESS signing certificate uses an unknown hash {alg}")
    if cert.fingerprint(h()) != digest:
        raise TimestampError("the ESS signing-certificate attribute names another certificate than the signer's")
    if serial is not None and (serial != cert.serial_number or issuer_der != cert.issuer.public_bytes()):
        raise TimestampError("the ESS signing-certificate issuer/serial does not match the signer's certificate")


def check_tsa_certificate(cert: x509.Certificate) -> None:
    """RFC 3161 §2.3: the EKU extension is critical and holds id-kp-timeStamping only."""
    problem = keys.certificate_problem(cert)
    if problem:
        raise ChainError(f"TSA certificate: {problem}")
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise ChainError("TSA certificate lacks the timeStamping extended key usage") from None
    if list(ext.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise ChainError("TSA certificate's extended key usage is not timeStamping alone")
    if not ext.critical:
        raise ChainError("TSA certificate's timeStamping extended key usage is not critical (RFC 3161 §2.3)")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (ku.digital_signature or ku.content_commitment):
            raise ChainError("TSA certificate's key usage allows no signatures")
    except x509.ExtensionNotFound:
        pass
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise ChainError("TSA certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    problem = keys.key_problem(cert.public_key())
    if problem:
        raise ChainError(f"TSA certificate: key policy: {problem}")


def verify(tok: Token, message: bytes, roots, intermediates=(), *, limits: PathLimits = DEFAULT_LIMITS,
           memo: SignatureMemo | None = None) -> TrustedTime:
    """The trusted time `tok` gives `message`, or TimestampError with the first failed check."""
    check_imprint(tok, message)
    if not roots:
        raise TimestampError("no TSA roots are trusted")
    if len(tok.certificates) > limits.max_embedded:
        raise TimestampError(f"time-stamp token embeds {len(tok.certificates)} certificates "
                             f"(at most {limits.max_embedded} accepted)")
    cert = _signer_cert(tok, list(tok.certificates) + list(intermediates) + list(roots))
    _check_ess(tok, cert)
    _check_signature(tok, cert)
    if not cert.not_valid_before_utc <= tok.gen_time <= cert.not_valid_after_utc:
        raise TimestampError(f"genTime {_iso(tok.gen_time)} is outside the TSA certificate's validity "
                             f"({_iso(cert.not_valid_before_utc)} to {_iso(cert.not_valid_after_utc)})")
    try:
        path = build_path(cert, list(tok.certificates) + list(intermediates), list(roots), tok.gen_time,
                          limits=limits, memo=memo, leaf_check=check_tsa_certificate, ca_purpose=None)
    except ChainError as e:
        raise TimestampError(f"TSA not trusted: {e}") from None
    return TrustedTime(tok.gen_time, tok.accuracy, tok.policy, tok.serial, tuple(path))


def earliest(results) -> TrustedTime | None:
    """Of several tokens that count, the one proving the earliest existence."""
    ok = [r for r in results if isinstance(r, TrustedTime)]
    return min(ok, key=lambda t: (t.latest, t.gen_time)) if ok else None
