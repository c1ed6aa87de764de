"""Revocation checking: OCSP (RFC 6960) with CRL fallback, both cached.

Where to ask comes from the policy's responder overrides, else the certificate's AIA;
*whom to believe* never does: a response must be signed by the certificate's issuer,
or by a responder certificate that carries id-kp-OCSPSigning and is issued by that
same issuer. The CertID must match, thisUpdate must not be in the future, nextUpdate
not in the past (with the configured skew), and a sent nonce must come back.
`unknown` is an answer, and it is not `good`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from sifguard.ca.ocsp_response import issuer_hashes
from sifguard.ocsp.cache import DirCache
from sifguard.policy.model import Revocation
from sifguard.x509.chain import fingerprint

GOOD, REVOKED, UNKNOWN, ERROR = "good", "revoked", "unknown", "error"
_HASH = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


class RevocationError(Exception):
    """A response or CRL that cannot be used (invalid, stale, foreign, unreachable)."""


@dataclass(frozen=True)
class Status:
    status: str                   # good | revoked | unknown | error
    source: str                   # ocsp | crl | cache (ocsp) | cache (crl) | none
    reason: str
    subject: str = ""
    serial: str = ""

    def as_dict(self) -> dict:
        return {"subject": self.subject, "serial": self.serial, "status": self.status,
                "source": self.source, "reason": self.reason}


def _verify_sig(pub, signature: bytes, data: bytes, h) -> None:
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(signature, data, padding.PKCS1v15(), h)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(signature, data, ec.ECDSA(h))
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        pub.verify(signature, data)
    else:
        raise InvalidSignature("unsupported responder key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


class Checker:
    def __init__(self, cfg: Revocation, session=None, now=None):
        self.cfg = cfg
        self._session = session
        self.now = now or _now
        self.cache = DirCache([cfg.cache_dir, cfg.shared_cache_dir])
        self.skew = dt.timedelta(seconds=cfg.clock_skew)

    @property
    def session(self):
        if self._session is None:
            import requests   # imported lazily: the warm path (all cached) never needs it
            self._session = requests.Session()
            self._session.trust_env = False          # no proxy from the environment for the site CA
        return self._session

    # --- public --------------------------------------------------------------------
    def check_path(self, path: list[x509.Certificate]) -> list[Status]:
        """The leaf and each intermediate (the trust anchor itself is not checked)."""
        return [self.check(path[i], path[i + 1]) for i in range(len(path) - 1)]

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, deadline: float | None = None) -> Status:
        subj, serial = cert.subject.rfc4514_string(), f"{cert.serial_number:X}"
        mk = lambda st, src, why: Status(st, src, why, subj, serial)  # noqa: E731
        if _ext(cert, x509.OCSPNoCheck) is not None:
            return mk(GOOD, "none", "id-pkix-ocsp-nocheck: not checked by design")
        errors = []
        urls = self._ocsp_urls(cert, issuer)
        if urls:
            try:
                st, src, why = self._ocsp(cert, issuer, urls)
                return mk(st, src, why)
            except RevocationError as e:
                errors.append(f"OCSP: {e}")
        else:
            errors.append("OCSP: no responder URL")
        if self.cfg.crl_fallback:
            try:
                st, src, why = self._crl(cert, issuer)
                return mk(st, src, why)
            except RevocationError as e:
                errors.append(f"CRL: {e}")
        return mk(ERROR, "none", "; ".join(errors))

    # --- OCSP ----------------------------------------------------------------------
    def _ocsp_urls(self, cert, issuer) -> list[str]:
        ifp = fingerprint(issuer)
        for r in self.cfg.responders:
            if r.issuer.lower().replace(":", "") in ("sha256" + ifp,) or \
                    fnmatch.fnmatchcase(issuer.subject.rfc4514_string(), r.issuer):
                return [r.url]
        aia = _ext(cert, x509.AuthorityInformationAccess)
        return [a.access_location.value for a in (aia or [])
                if a.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(a.access_location, x509.UniformResourceIdentifier)
                and a.access_location.value.startswith(("http://", "https://"))]

    def _cache_key(self, cert, issuer) -> str:
        return DirCache.key(issuer_hashes(issuer, "sha256")[1], str(cert.serial_number))

    def _ocsp(self, cert, issuer, urls) -> tuple[str, str, str]:
        key = self._cache_key(cert, issuer)
        for der in self.cache.get("ocsp", key):
            try:
                st, why = self.validate(der, cert, issuer, None, cache=True)
                return st, "cache (ocsp)", why
            except RevocationError:
                continue
        deadline = time.monotonic() + self.cfg.timeout
        last = "no answer"
        for attempt in range(self.cfg.retries + 1):
            for url in urls:
                for alg in ("sha256", "sha1"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RevocationError(f"timed out after {self.cfg.timeout:g} s ({last})")
                    nonce = os.urandom(16) if self.cfg.nonce else None
                    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, _HASH[alg]())
                    if nonce:
                        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
                    body = b.build().public_bytes(serialization.Encoding.DER)
                    try:
                        r = self.session.post(url, data=body, timeout=(min(left, self.cfg.timeout), left),
                                              headers={"Content-Type": "application/ocsp-request",
                                                       "Connection": "close"},   # no stale pooled sockets
                                              allow_redirects=False)
                        der = r.content[:1 << 20]
                    except Exception as e:  # noqa: BLE001 - requests/urllib3 raise many kinds
                        last = f"{url}: {type(e).__name__}: {str(e)[-160:]}"
                        break   # this URL is unreachable; the other hash will not help
                    if r.status_code != 200:
                        last = f"{url}: HTTP {r.status_code}"
                        break
                    try:
                        resp = ocsp.load_der_ocsp_response(der)
                    except ValueError:
                        last = f"{url}: not an OCSP response"
                        break
                    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                        last = f"{url}: responder said {resp.response_status.name.lower()}"
                        continue   # e.g. a responder that only knows SHA-1 CertIDs
                    try:
                        st, why = self.validate(der, cert, issuer, nonce)
                    except RevocationError as e:
                        last = f"{url}: {e}"
                        break
                    if st != UNKNOWN:
                        self.cache.put("ocsp", key, der)
                    return st, "ocsp", why
            if attempt < self.cfg.retries:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise RevocationError(last)

    def validate(self, der: bytes, cert, issuer, nonce: bytes | None, cache: bool = False) -> tuple[str, str]:
        """Check an OCSP response completely; returns (status, description)."""
        try:
            resp = ocsp.load_der_ocsp_response(der)
        except ValueError:
            raise RevocationError("not an OCSP response") from None
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RevocationError(f"responder said {resp.response_status.name.lower()}")
        single = None
        for s in resp.responses:
            alg = s.hash_algorithm.name
            if alg not in _HASH:
                continue
            nh, kh = issuer_hashes(issuer, alg)
            if s.serial_number == cert.serial_number and s.issuer_key_hash == kh and s.issuer_name_hash == nh:
                single = s
                break
        if single is None:
            raise RevocationError("response is about another certificate (CertID mismatch)")
        signer = self._responder(resp, issuer)
        try:
            _verify_sig(signer.public_key(), resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm)
        except (InvalidSignature, TypeError, ValueError):
            raise RevocationError("response signature does not verify") from None
        now = self.now()
        if single.this_update_utc > now + self.skew:
            raise RevocationError("response thisUpdate is in the future")
        horizon = single.this_update_utc + dt.timedelta(seconds=self.cfg.max_age) if (cache or single.next_update_utc is None) else None
        if single.next_update_utc is not None and single.next_update_utc < now - self.skew:
            raise RevocationError(f"response is stale (nextUpdate {single.next_update_utc:%Y-%m-%d %H:%M:%SZ})")
        if horizon is not None and horizon < now:
            raise RevocationError("cached response is older than revocation.max_age")
        if nonce is not None:
            got = None
            for e in resp.extensions:
                if isinstance(e.value, x509.OCSPNonce):
                    got = e.value.nonce
            if got != nonce:
                raise RevocationError("nonce mismatch (replayed response?)")
        st = single.certificate_status
        if st == ocsp.OCSPCertStatus.GOOD:
            return GOOD, f"OCSP good (thisUpdate {single.this_update_utc:%Y-%m-%d %H:%M:%SZ})"
        if st == ocsp.OCSPCertStatus.REVOKED:
            reason = single.revocation_reason.name if single.revocation_reason else "unspecified"
            return REVOKED, f"revoked {single.revocation_time_utc:%Y-%m-%d %H:%M:%SZ} ({reason})"
        return UNKNOWN, "the responder does not know this certificate (unknown is not good)"

    def _responder(self, resp, issuer: x509.Certificate) -> x509.Certificate:
        """The certificate whose key must have signed `resp`."""
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
            eku = _ext(c, x509.ExtendedKeyUsage)
            if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise RevocationError("delegated responder lacks id-kp-OCSPSigning")
            now = self.now()
            if not (c.not_valid_before_utc - self.skew <= now <= c.not_valid_after_utc + self.skew):
                raise RevocationError("delegated responder certificate is expired or not yet valid")
            return c
        raise RevocationError("response is signed by neither the issuer nor a responder it authorised")

    # --- CRL -----------------------------------------------------------------------
    def _crl(self, cert, issuer) -> tuple[str, str, str]:
        dps = _ext(cert, x509.CRLDistributionPoints)
        urls = [n.value for dp in (dps or []) for n in (dp.full_name or [])
                if isinstance(n, x509.UniformResourceIdentifier)]
        if not urls:
            raise RevocationError("no CRL distribution point")
        last = ""
        for url in urls:
            key = DirCache.key(url, fingerprint(issuer))
            crl, source = None, "crl"
            for der in self.cache.get("crl", key):
                try:
                    crl = self._valid_crl(der, issuer)
                    source = "cache (crl)"
                    break
                except RevocationError:
                    continue
            if crl is None:
                try:
                    der = self._fetch(url)
                    crl = self._valid_crl(der, issuer)
                except RevocationError as e:
                    last = f"{url}: {e}"
                    continue
                self.cache.put("crl", key, der)
            r = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if r is not None:
                try:
                    reason = r.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
                except x509.ExtensionNotFound:
                    reason = "unspecified"
                return REVOKED, source, f"listed in CRL #{_crl_number(crl)} since {r.revocation_date_utc:%Y-%m-%d %H:%M:%SZ} ({reason})"
            return GOOD, source, f"not listed in CRL #{_crl_number(crl)} (nextUpdate {crl.next_update_utc:%Y-%m-%d %H:%M:%SZ})"
        raise RevocationError(last or "no usable CRL")

    def _fetch(self, url: str) -> bytes:
        if url.startswith("file://") or url.startswith("/"):
            path = url[7:] if url.startswith("file://") else url
            try:
                with open(path, "rb") as f:
                    return f.read(64 << 20)
            except OSError as e:
                raise RevocationError(e.strerror) from None
        if not url.startswith(("http://", "https://")):
            raise RevocationError("unsupported CRL URL scheme")
        try:
            r = self.session.get(url, timeout=(self.cfg.timeout, self.cfg.timeout), allow_redirects=False)
        except Exception as e:  # noqa: BLE001
            raise RevocationError(type(e).__name__) from None
        if r.status_code != 200:
            raise RevocationError(f"HTTP {r.status_code}")
        return r.content

    def _valid_crl(self, data: bytes, issuer: x509.Certificate):
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
        now = self.now()
        if crl.last_update_utc > now + self.skew:
            raise RevocationError("CRL thisUpdate is in the future")
        if crl.next_update_utc is None or crl.next_update_utc < now - self.skew:
            raise RevocationError("CRL is stale")
        if crl.last_update_utc + dt.timedelta(seconds=self.cfg.max_age) < now:
            raise RevocationError("CRL is older than revocation.max_age")
        return crl


def _crl_number(crl) -> str:
    try:
        return str(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return "?"
