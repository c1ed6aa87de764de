"""What an OCSP response or a CRL proves, as pure functions (no network, no disk).

Two questions are kept apart, because they have different answers for a revocation:

* *Is it authentic?* — signed by the issuer (or, for OCSP, by a delegated responder with
  id-kp-OCSPSigning that the issuer signed), about this CertID / from this issuer.
* *Is it current?* — thisUpdate not in the future, nextUpdate not past (with the skew),
  not older than max_age when there is no nextUpdate or when it comes from a cache.

A `good` needs both. A `revoked` needs only the first: revocation is permanent (RFC 5280
§3.3), so an authentic revocation stays true after the document goes stale — except
certificateHold, which may be lifted and therefore counts only while current.

A third question concerns expired certificates: a CA may drop them from its CRLs and its
responder may forget them, so *not revoked* about an expired certificate is evidence only
when the source says it keeps revocation information past expiry (OCSP archiveCutoff,
RFC 6960 §4.4.4; CRL ExpiredCertsOnCRL, X.509 / RFC 5280 §5.2.7) since a time no later
than the certificate's notAfter. What a revocation says beyond its time — reason code and
invalidityDate — is read into `RevokedFacts` for the decision about signing times.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from sifguard.ca.ocsp_response import issuer_hashes
from sifguard.errors import RefusedError

GOOD, REVOKED, UNKNOWN, ERROR = "good", "revoked", "unknown", "error"
HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


class RevocationError(RefusedError):
    """A response or CRL that cannot be used (invalid, stale, foreign, unreachable, too big,
    too slow). Status then cannot be established, which `enforce` refuses (exit 1)."""


@dataclass(frozen=True)
class Clock:
    now: dt.datetime
    skew: dt.timedelta
    max_age: dt.timedelta


def _stamp(t: dt.datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%SZ}"


def verify_signature(pub, signature: bytes, data: bytes, h) -> None:
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(signature, data, padding.PKCS1v15(), h)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(signature, data, ec.ECDSA(h))
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        pub.verify(signature, data)
    else:
        raise InvalidSignature("unsupported responder key")


def extension(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    bc = extension(cert, x509.BasicConstraints)
    return bool(bc and bc.ca)


# --- OCSP --------------------------------------------------------------------------
@dataclass(frozen=True)
class RevokedFacts:
    """What a revocation says: when, why (RFC 5280 name, None when no reason code was
    given) and since when the certificate is known or suspected invalid (invalidityDate)."""
    at: float                          # epoch seconds
    reason: str | None
    invalidity: float | None = None


def expired(cert: x509.Certificate, clock: Clock) -> bool:
    return cert.not_valid_after_utc < clock.now - clock.skew


def keeps_expired(since: dt.datetime | None, cert: x509.Certificate) -> bool:
    """Whether a source that keeps expired certificates' revocations `since` then covers `cert`."""
    return since is not None and since <= cert.not_valid_after_utc


def _generalized_time(der: bytes) -> dt.datetime | None:
    """A DER GeneralizedTime in UTC, else None (an unreadable or local time proves nothing)."""
    from asn1crypto import core
    try:
        t = core.GeneralizedTime.load(der, strict=True).native
    except Exception:  # noqa: BLE001 - hostile bytes: unreadable means "no such time"
        return None
    return t if isinstance(t, dt.datetime) and t.tzinfo is not None else None


@dataclass(frozen=True)
class OcspProof:
    """An authentic OCSP answer about one CertID (freshness not yet judged)."""
    response: ocsp.OCSPResponse
    single: object                     # the OCSPSingleResponse about our CertID
    signer: x509.Certificate           # the issuer, or the delegated responder
    der: bytes = b""                   # the whole response, for what cryptography does not expose
    index: int = 0                     # position of `single` among the response's SingleResponses


def load_ocsp(der: bytes) -> ocsp.OCSPResponse:
    try:
        return ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise RevocationError("not an OCSP response") from None


def authentic_ocsp(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, clock: Clock,
                   at_production: bool = False) -> OcspProof:
    """Parse, match the CertID, find the authorised signer and verify the signature.
    `at_production`: judge a delegated responder's validity at producedAt (for a stale
    revocation kept from a cache) instead of now."""
    resp = load_ocsp(der)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationError(f"responder said {resp.response_status.name.lower()}")
    single, index = None, 0
    for index, s in enumerate(resp.responses):
        alg = s.hash_algorithm.name
        if alg not in HASHES:
            continue
        nh, kh = issuer_hashes(issuer, alg)
        if s.serial_number == cert.serial_number and s.issuer_key_hash == kh and s.issuer_name_hash == nh:
            single = s
            break
    if single is None:
        raise RevocationError("response is about another certificate (CertID mismatch)")
    when = resp.produced_at_utc if at_production else clock.now
    signer = responder_of(resp, issuer, when, clock.skew)
    try:
        verify_signature(signer.public_key(), resp.signature, resp.tbs_response_bytes,
                         resp.signature_hash_algorithm)
    except (InvalidSignature, TypeError, ValueError):
        raise RevocationError("response signature does not verify") from None
    return OcspProof(resp, single, signer, der, index)


def responder_of(resp, issuer: x509.Certificate, when: dt.datetime, skew: dt.timedelta) -> x509.Certificate:
    """The certificate whose key must have signed `resp`: the issuer, or a responder
    certificate the issuer signed for exactly this (id-kp-OCSPSigning), valid at `when`."""
    def is_named(c: x509.Certificate) -> bool:
        if resp.responder_name is not None:
            return c.subject == resp.responder_name
        return resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(c.public_key()).digest
    if is_named(issuer):
        return issuer
    for c in resp.certificates:
        if not is_named(c):
            continue
        if c.issuer != issuer.subject:
            raise RevocationError("delegated responder is not issued by the certificate's issuer")
        try:
            c.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise RevocationError("delegated responder certificate is not signed by the issuer") from None
        eku = extension(c, x509.ExtendedKeyUsage)
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise RevocationError("delegated responder lacks id-kp-OCSPSigning")
        if not (c.not_valid_before_utc - skew <= when <= c.not_valid_after_utc + skew):
            raise RevocationError("delegated responder certificate is expired or not yet valid")
        return c
    raise RevocationError("response is signed by neither the issuer nor a responder it authorised")


def signer_valid_at(proof: OcspProof, when: dt.datetime, skew: dt.timedelta) -> bool:
    """Whether the signer (issuer or delegated responder) is within its validity period."""
    c = proof.signer
    return c.not_valid_before_utc - skew <= when <= c.not_valid_after_utc + skew


def ocsp_current(proof: OcspProof, clock: Clock, from_cache: bool) -> None:
    """Raise unless the answer is current (thisUpdate/nextUpdate/max_age)."""
    s = proof.single
    if s.this_update_utc > clock.now + clock.skew:
        raise RevocationError("response thisUpdate is in the future")
    if s.next_update_utc is not None and s.next_update_utc < clock.now - clock.skew:
        raise RevocationError(f"response is stale (nextUpdate {_stamp(s.next_update_utc)})")
    if (from_cache or s.next_update_utc is None) and s.this_update_utc + clock.max_age < clock.now:
        raise RevocationError("cached response is older than revocation.max_age")


def ocsp_nonce_matches(proof: OcspProof, nonce: bytes) -> None:
    got = None
    for e in proof.response.extensions:
        if isinstance(e.value, x509.OCSPNonce):
            got = e.value.nonce
    if got != nonce:
        raise RevocationError("nonce mismatch (replayed response?)")


def ocsp_status(proof: OcspProof) -> tuple[str, str]:
    s = proof.single
    st = s.certificate_status
    if st == ocsp.OCSPCertStatus.GOOD:
        return GOOD, f"OCSP good (thisUpdate {_stamp(s.this_update_utc)})"
    if st == ocsp.OCSPCertStatus.REVOKED:
        reason = s.revocation_reason.value if s.revocation_reason else "unspecified"
        return REVOKED, f"revoked {_stamp(s.revocation_time_utc)} ({reason})"
    return UNKNOWN, "the responder does not know this certificate (unknown is not good)"


def ocsp_is_hold(proof: OcspProof) -> bool:
    return proof.single.revocation_reason == x509.ReasonFlags.certificate_hold


def ocsp_single_extensions(proof: OcspProof) -> dict[str, bytes] | None:
    """The singleExtensions of the matched SingleResponse: dotted OID -> DER of extnValue's
    contents; None when they cannot be read (or an OID repeats). cryptography exposes them
    only for a one-response reply (and known OIDs parsed), so they are read with asn1crypto."""
    from asn1crypto import ocsp as aocsp
    try:
        basic = aocsp.OCSPResponse.load(proof.der)["response_bytes"]["response"].parsed
        single = basic["tbs_response_data"]["responses"][proof.index]
        out = {}
        for ext in single["single_extensions"] or []:
            oid = ext["extn_id"].dotted
            if oid in out:
                return None
            out[oid] = ext["extn_value"].contents
        return out
    except Exception:  # noqa: BLE001 - hostile bytes cryptography accepted: whatever asn1crypto raises
        return None


ARCHIVE_CUTOFF = "1.3.6.1.5.5.7.48.1.6"      # id-pkix-ocsp-archive-cutoff (RFC 6960 §4.4.4)
INVALIDITY_DATE = "2.5.29.24"                # id-ce-invalidityDate (RFC 5280 §5.3.2)
EXPIRED_CERTS_ON_CRL = "2.5.29.60"           # id-ce-expiredCertsOnCRL


def ocsp_archive_cutoff(proof: OcspProof) -> dt.datetime | None:
    exts = ocsp_single_extensions(proof)
    der = (exts or {}).get(ARCHIVE_CUTOFF)
    return _generalized_time(der) if der is not None else None


def ocsp_revocation(proof: OcspProof) -> RevokedFacts:
    """Facts of a revoked answer. Unreadable singleExtensions leave the invalidity date
    unknown and the reason None (as if none were given), which no exception may pardon."""
    s = proof.single
    reason = s.revocation_reason.value if s.revocation_reason is not None else None
    exts = ocsp_single_extensions(proof)
    if exts is None:
        return RevokedFacts(s.revocation_time_utc.timestamp(), None, None)
    der = exts.get(INVALIDITY_DATE)
    invalid = _generalized_time(der) if der is not None else None
    if der is not None and invalid is None:
        reason = None
    return RevokedFacts(s.revocation_time_utc.timestamp(), reason,
                        invalid.timestamp() if invalid is not None else None)


# --- CRL ---------------------------------------------------------------------------
def authentic_crl(data: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN")
               else x509.load_der_x509_crl(data))
    except ValueError:
        raise RevocationError("not a CRL") from None
    if crl.issuer != issuer.subject:
        raise RevocationError("CRL is from another issuer")
    try:
        ok = crl.is_signature_valid(issuer.public_key())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RevocationError("CRL signature does not verify")
    return crl


def crl_current(crl: x509.CertificateRevocationList, clock: Clock) -> None:
    if crl.last_update_utc > clock.now + clock.skew:
        raise RevocationError("CRL thisUpdate is in the future")
    if crl.next_update_utc is None or crl.next_update_utc < clock.now - clock.skew:
        raise RevocationError("CRL is stale")
    if crl.last_update_utc + clock.max_age < clock.now:
        raise RevocationError("CRL is older than revocation.max_age")


def crl_number(crl) -> str:
    n = extension(crl, x509.CRLNumber)
    return str(n.crl_number) if n is not None else "?"


def crl_listing(crl, serial: int) -> tuple[str, bool] | None:
    """(description, is certificateHold) when `serial` is listed, else None."""
    r = crl.get_revoked_certificate_by_serial_number(serial)
    if r is None:
        return None
    reason = extension(r, x509.CRLReason)
    flag = reason.reason if reason is not None else None
    name = flag.value if flag is not None else "unspecified"
    return (f"listed in CRL #{crl_number(crl)} since {_stamp(r.revocation_date_utc)} ({name})",
            flag == x509.ReasonFlags.certificate_hold)


def crl_revocation(crl, serial: int) -> RevokedFacts | None:
    r = crl.get_revoked_certificate_by_serial_number(serial)
    if r is None:
        return None
    reason = extension(r, x509.CRLReason)
    invalid = extension(r, x509.InvalidityDate)
    return RevokedFacts(r.revocation_date_utc.timestamp(), reason.reason.value if reason is not None else None,
                        invalid.invalidity_date_utc.timestamp() if invalid is not None else None)


def crl_expired_certs_on(crl) -> dt.datetime | None:
    """The CRL's ExpiredCertsOnCRL (it lists revoked certificates that expired since then)."""
    try:
        ext = crl.extensions.get_extension_for_oid(x509.ObjectIdentifier(EXPIRED_CERTS_ON_CRL))
    except (x509.ExtensionNotFound, x509.DuplicateExtension):
        return None
    value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else None
    return _generalized_time(value) if value is not None else None


def crl_not_listed(crl) -> str:
    return f"not listed in CRL #{crl_number(crl)} (nextUpdate {_stamp(crl.next_update_utc)})"


def crl_covers(crl, cert: x509.Certificate, cert_crl_urls: list[str]) -> bool:
    """Whether `crl` is complete for `cert`, i.e. whether *not listed* there means good.
    A CRL whose IssuingDistributionPoint narrows its scope (another partition, CA-only or
    user-only, some reasons only, attribute certificates) or a delta CRL cannot vouch."""
    if extension(crl, x509.DeltaCRLIndicator) is not None:
        return False
    idp = extension(crl, x509.IssuingDistributionPoint)
    if idp is None:
        return True
    if idp.only_some_reasons or idp.only_contains_attribute_certs or idp.indirect_crl:
        return False
    if idp.only_contains_user_certs and is_ca(cert) or idp.only_contains_ca_certs and not is_ca(cert):
        return False
    if idp.full_name:
        names = {n.value for n in idp.full_name if isinstance(n, x509.UniformResourceIdentifier)}
        return bool(names & set(cert_crl_urls))
    return idp.relative_name is None
