"""Certificate profiles of the site CA: pure builders, no I/O.

root (self-signed, CA, pathlen 1) → issuing intermediate (CA, pathlen 0, EKU
codeSigning + OCSPSigning) → code-signing leaves, the delegated OCSP responder
(EKU OCSPSigning, id-pkix-ocsp-nocheck) and the Time-Stamping Authority (EKU
timeStamping only, critical: RFC 3161 2.3).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from sifguard.ca.names import KEY_TYPES, REASON_NAMES
from sifguard.ca.ocsp_der import generalized_time
from sifguard.errors import BadInputError

BACKDATE = dt.timedelta(minutes=5)   # tolerate node clock skew on notBefore
TSA_DAYS = 1826                      # 5 years, never beyond the issuing CA


def generate_key(kind: str):
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa-3072":
        return rsa.generate_private_key(65537, 3072)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise BadInputError(f"unknown key type {kind!r} (choose {', '.join(KEY_TYPES)})")


def sig_hash(key):
    """Hash to sign with this key (Ed25519 takes none)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def random_serial() -> int:
    """Positive, at most 20 bytes, 159 random bits."""
    return x509.random_serial_number()


@dataclass(frozen=True)
class SiteURLs:
    """Where `ca serve` publishes things, as baked into certificates."""

    ocsp: str
    intermediate: str
    root: str
    crl: str
    root_crl: str

    @classmethod
    def from_base(cls, base: str) -> "SiteURLs":
        b = base.rstrip("/") + "/"
        return cls(ocsp=b, intermediate=b + "intermediate.crt", root=b + "root.crt", crl=b + "crl.der",
                   root_crl=b + "root-crl.der")


def _name(site: str, cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _base(subject: x509.Name, issuer: x509.Name, pub, serial: int, now: dt.datetime, days: int,
          not_after: dt.datetime | None = None):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(serial).not_valid_before(now - BACKDATE)
            .not_valid_after(not_after or now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())


def _aia(urls: SiteURLs, issuer_url: str) -> x509.AuthorityInformationAccess:
    """Where to ask about a certificate (the site's OCSP) and where its issuer's certificate is."""
    return x509.AuthorityInformationAccess([
        x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)),
        x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(issuer_url))])


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)])


def _ku(digital_signature=False, key_cert_sign=False, crl_sign=False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature, False, False, False, False, key_cert_sign, crl_sign, False, False)


def root_cert(key, site: str, now: dt.datetime, days: int = 3650) -> x509.Certificate:
    name = _name(site, f"{site} Root CA")
    return (_base(name, name, key.public_key(), random_serial(), now, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ku(key_cert_sign=True, crl_sign=True), critical=True)
            .sign(key, sig_hash(key)))


def intermediate_cert(key, root: x509.Certificate, root_key, site: str, urls: SiteURLs,
                      now: dt.datetime, days: int = 1825) -> x509.Certificate:
    return (_base(_name(site, f"{site} Issuing CA"), root.subject, key.public_key(), random_serial(), now, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ku(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING,
                                                  ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .add_extension(_aki(root), critical=False)
            .add_extension(_aia(urls, urls.root), critical=False)
            .add_extension(_crl_dp(urls.root_crl), critical=False)
            .sign(root_key, sig_hash(root_key)))


def ocsp_responder_cert(key, issuer: x509.Certificate, issuer_key, site: str, now: dt.datetime,
                        days: int = 365) -> x509.Certificate:
    return (_base(_name(site, f"{site} OCSP Responder"), issuer.subject, key.public_key(), random_serial(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ku(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(_aki(issuer), critical=False)
            .sign(issuer_key, sig_hash(issuer_key)))


def code_signing_cert(pub, cn: str, email: str | None, issuer: x509.Certificate, issuer_key,
                      site: str, urls: SiteURLs, serial: int, now: dt.datetime,
                      days: int) -> x509.Certificate:
    b = (_base(_name(site, cn), issuer.subject, pub, serial, now, days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_ku(digital_signature=True), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
         .add_extension(_aki(issuer), critical=False)
         .add_extension(_aia(urls, urls.intermediate), critical=False)
         .add_extension(_crl_dp(urls.crl), critical=False))
    if email:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    if now + dt.timedelta(days=days) > issuer.not_valid_after_utc:
        raise BadInputError(f"--days {days} would outlive the issuing CA "
                            f"(valid until {issuer.not_valid_after_utc:%Y-%m-%d})")
    return b.sign(issuer_key, sig_hash(issuer_key))


def tsa_key_type(ca_key_type: str) -> str:
    """The TSA key follows the CA's key type, except Ed25519: OpenSSL's `ts -verify` (and
    many RFC 3161 verifiers) cannot check Ed25519 SignerInfos, so that TSA gets EC P-256."""
    return "ec-p256" if ca_key_type == "ed25519" else ca_key_type


def tsa_cert(key, issuer: x509.Certificate, issuer_key, site: str, urls: SiteURLs, now: dt.datetime,
             days: int = TSA_DAYS, serial: int | None = None) -> x509.Certificate:
    """The Time-Stamping Authority: EKU timeStamping alone and critical (RFC 3161 2.3), AIA
    and CRL DP like code-signing leaves (its revocation is checked with the site's OCSP/CRL).
    Valid for `days`, cut at the issuing CA's notAfter."""
    not_after = min(now + dt.timedelta(days=days), issuer.not_valid_after_utc)
    return (_base(_name(site, f"{site} TSA"), issuer.subject, key.public_key(), serial or random_serial(), now,
                  days, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(_aki(issuer), critical=False)
            .add_extension(_aia(urls, urls.intermediate), critical=False)
            .add_extension(_crl_dp(urls.crl), critical=False)
            .sign(issuer_key, sig_hash(issuer_key)))


# name -> flag: cryptography's ReasonFlags values are the RFC 5280 names
REASONS = {name: x509.ReasonFlags(name) for name in REASON_NAMES}

# RFC 5280 §5.2.7 (X.509 ExpiredCertsOnCRL): the CRL keeps listing revoked certificates whose
# notAfter is at or after this instant
EXPIRED_CERTS_ON_CRL = x509.ObjectIdentifier("2.5.29.60")


def build_crl(issuer: x509.Certificate, issuer_key, revoked: list[tuple], number: int, now: dt.datetime,
              next_update: dt.timedelta, expired_certs_on_crl: dt.datetime | None = None
              ) -> x509.CertificateRevocationList:
    """`revoked`: (serial, revocation date, reason name or None[, invalidity date or None]).
    `expired_certs_on_crl`: the CRL says it lists revoked certificates that expired since then."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
         .last_update(now).next_update(now + next_update)
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(_aki(issuer), critical=False))
    if expired_certs_on_crl is not None:
        b = b.add_extension(x509.UnrecognizedExtension(EXPIRED_CERTS_ON_CRL, generalized_time(expired_certs_on_crl)),
                            critical=False)
    for serial, when, reason, *rest in revoked:
        invalidity = rest[0] if rest else None
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason and reason != "unspecified":
            rb = rb.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
        if invalidity is not None:
            rb = rb.add_extension(x509.InvalidityDate(invalidity), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(issuer_key, sig_hash(issuer_key))
