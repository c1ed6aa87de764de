"""Revocation checking: OCSP (RFC 6960) with CRL fallback, both cached, within one deadline.

Where to ask comes from the policy's responder overrides, else the certificate's AIA;
*whom to believe* never does: a response must be signed by the certificate's issuer, or
by a responder certificate that carries id-kp-OCSPSigning and is issued by that same
issuer (see `answers`). `unknown` is an answer, and it is not `good`.

Order of one `check(cert, issuer)`:

1. **Known revocations** (no network, no budget needed): any cached OCSP response (node or
   shared cache) that authentically says *revoked* for this CertID, and any cached CRL
   from this issuer that authentically lists the serial, decide `revoked` — fresh or
   stale (revocation is permanent; a stale certificateHold is the one exception). So an
   outage can never turn a revocation the node already knows of into soft-fail's allow,
   and a fresh cached `good` never hides a revocation a CRL shows.
2. A fresh cached OCSP `good`.
3. OCSP over the network. A signed good/revoked/unknown is the answer. Of the unsigned
   error statuses, `tryLater`, `internalError`, `sigRequired` (and `malformedRequest`
   for both CertID hashes) are outages: try the next URL / retry, then the CRL.
   `unauthorized` (for both hashes) from the responder asked for this issuer means the
   issuer's responder does not vouch for the certificate: for an end-entity certificate
   that is `unknown` — no CRL fallback, since a CRL only lists what is revoked and cannot
   tell that the issuer never issued a serial (a certificate made with the issuing key
   behind the CA's back). For a CA certificate it means "no OCSP for this issuer" (e.g.
   the root key is offline and the root publishes only a CRL) and the CRL decides.
   These statuses are unsigned, so an on-path attacker can forge them: `unauthorized`
   can only turn an answer into a refusal (denial of service, which dropping packets
   already gives), and an outage only leads to the signed CRL.
4. CRL: a fresh cached CRL from the issuer that is complete for this certificate, else
   the distribution points (http(s), file://).

Expired certificates (notAfter before now - clock_skew): CAs may forget them, so a `good`
(OCSP) or *not listed* (CRL) is evidence only when the source keeps revocations past expiry
since no later than the certificate's notAfter — OCSP archiveCutoff, CRL ExpiredCertsOnCRL.
An OCSP good without it falls through to the CRL; a CRL without it proves nothing; a
`revoked` stays a revocation. Every revoked `Status` carries its RevokedFacts (time,
reason code, invalidityDate) for the decision about signing times.

Budget: `revocation.timeout` is the revocation budget of a whole decision — every OCSP
and CRL exchange (connect, headers, body, retries, fallback) for every certificate of
every chain. Pass one `deadline` (a time.monotonic() instant) to `check`/`check_path`, or
open `with checker.budget():` around the checks of a decision; a bare `check` gets its
own `timeout`. `check_path` gives each certificate an equal share of what is left
(leftovers carry forward). Within one certificate, when a CRL fallback still needs the
network, OCSP (all URLs and retries) may use at most OCSP_SHARE of the remaining time so
that a silent responder leaves the CRL time to answer. Cache reads need no budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import fnmatch
import os
import threading
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from sifguard.ca.ocsp_response import issuer_hashes
from sifguard.ocsp import answers as A
from sifguard.ocsp.answers import ERROR, GOOD, REVOKED, UNKNOWN, RevocationError  # noqa: F401 - re-exported
from sifguard.ocsp.cache import DirCache
from sifguard.ocsp.transport import Fetcher, file_url_path, read_regular_file
from sifguard.policy.model import Revocation
from sifguard.x509.chain import fingerprint

OCSP_MAX_BYTES = 256 << 10        # a response with a few embedded certificates is a few KiB
CRL_MAX_BYTES = 16 << 20          # default; `revocation.crl_max_bytes` when the policy has it
OCSP_SHARE = 0.5                  # of a certificate's remaining budget, when a CRL fetch may follow
_RETRY_PAUSE = 0.2
_OUTAGES = {ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.INTERNAL_ERROR,
            ocsp.OCSPResponseStatus.SIG_REQUIRED}


@dataclass(frozen=True)
class Status:
    status: str                   # good | revoked | unknown | error
    source: str                   # ocsp | crl | cache (ocsp) | cache (crl) | cache (ocsp, stale) | cache (crl, stale) | none
    reason: str
    subject: str = ""
    serial: str = ""
    good_until: float | None = None   # a `good` answer: when the evidence stops being current (epoch s)
    # a `revoked` answer: OCSP revocationTime / CRL revocationDate (epoch s), the RFC 5280 reason
    # name (None when no reason code was given), the invalidityDate (epoch s) when given
    revoked_at: float | None = None
    revocation_reason: str | None = None
    invalidity_date: float | None = None

    def as_dict(self) -> dict:
        d = {"subject": self.subject, "serial": self.serial, "status": self.status,
             "source": self.source, "reason": self.reason}
        if self.good_until is not None:
            d["good_until"] = round(self.good_until, 3)
        if self.revoked_at is not None:
            d["revoked_at"] = _iso(self.revoked_at)
        if self.revocation_reason is not None:
            d["revocation_reason"] = self.revocation_reason
        if self.invalidity_date is not None:
            d["invalidity_date"] = _iso(self.invalidity_date)
        return d


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Known:
    revoked: tuple[str, str, A.RevokedFacts] | None = None   # (source, reason, facts)
    good: str | None = None                      # a current cached OCSP good (reason), if no revocation
    fresh_crl: object = None                     # a current cached CRL complete for the certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _status_name(s: ocsp.OCSPResponseStatus) -> str:
    return {"MALFORMED_REQUEST": "malformedRequest", "INTERNAL_ERROR": "internalError", "TRY_LATER": "tryLater",
            "SIG_REQUIRED": "sigRequired", "UNAUTHORIZED": "unauthorized"}.get(s.name, s.name.lower())


class Checker:
    def __init__(self, cfg: Revocation, session=None, now=None):
        self.cfg = cfg
        self.now = now or _now
        self.cache = DirCache([cfg.cache_dir, cfg.shared_cache_dir])
        self.skew = dt.timedelta(seconds=cfg.clock_skew)
        self.fetcher = Fetcher(session)
        self.ocsp_max_bytes = OCSP_MAX_BYTES
        self.crl_max_bytes = int(getattr(cfg, "crl_max_bytes", None) or CRL_MAX_BYTES)
        self._local = threading.local()          # per thread: the stager decides in many threads at once
        self._inflight: dict[str, threading.Lock] = {}
        self._inflight_guard = threading.Lock()

    # per-thread state: a budget (nested `budget()` blocks) and the parsed cached CRLs of one check
    @property
    def _budget(self) -> float | None:
        return getattr(self._local, "budget", None)

    @_budget.setter
    def _budget(self, v: float | None) -> None:
        self._local.budget = v

    @property
    def _crl_memo(self) -> dict | None:
        return getattr(self._local, "crl_memo", None)

    @_crl_memo.setter
    def _crl_memo(self, v: dict | None) -> None:
        self._local.crl_memo = v

    @property
    def session(self):
        return self.fetcher.session

    def clock(self) -> A.Clock:
        return A.Clock(self.now(), self.skew, dt.timedelta(seconds=self.cfg.max_age))

    # --- budget --------------------------------------------------------------------
    def deadline(self, seconds: float | None = None) -> float:
        """A time.monotonic() instant `seconds` (default revocation.timeout) from now."""
        return time.monotonic() + (self.cfg.timeout if seconds is None else seconds)

    @contextlib.contextmanager
    def budget(self, seconds: float | None = None):
        """One deadline for every check inside (nested budgets only shorten it); yields it."""
        outer = self._budget
        d = self.deadline(seconds)
        self._budget = d if outer is None else min(d, outer)
        try:
            yield self._budget
        finally:
            self._budget = outer

    @staticmethod
    def share(deadline: float, certificates_left: int) -> float:
        """The deadline for the next of `certificates_left` checks: an equal share of the
        time left before `deadline` (what a check does not use carries forward)."""
        t = time.monotonic()
        return t + max(0.0, deadline - t) / max(1, certificates_left)

    def _resolve(self, deadline: float | None) -> float:
        if deadline is None:
            return self._budget if self._budget is not None else self.deadline()
        return deadline if self._budget is None else min(deadline, self._budget)

    # --- public --------------------------------------------------------------------
    def check_path(self, path: list[x509.Certificate], deadline: float | None = None) -> list[Status]:
        """The leaf and each intermediate (the trust anchor itself is not checked), all
        within one deadline, each certificate getting an equal share of what is left."""
        deadline = self._resolve(deadline)
        out, n = [], len(path) - 1
        for i in range(n):
            out.append(self.check(path[i], path[i + 1], deadline=self.share(deadline, n - i)))
        return out

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, deadline: float | None = None) -> Status:
        """Revocation status of `cert`, ending by `deadline` (time.monotonic()). An
        id-pkix-ocsp-nocheck extension is not honoured here: it only exempts a delegated
        responder certificate while it vouches for a response, never a checked certificate."""
        self._crl_memo = {}
        try:
            return self._check(cert, issuer, self._resolve(deadline))
        finally:
            self._crl_memo = None

    def _check(self, cert, issuer, deadline: float) -> Status:
        subj, serial = cert.subject.rfc4514_string(), f"{cert.serial_number:X}"

        def mk(st, src, why, until=None, facts: A.RevokedFacts | None = None) -> Status:
            if facts is None:
                return Status(st, src, why, subj, serial, until)
            return Status(st, src, why, subj, serial, until, facts.at, facts.reason, facts.invalidity)
        clock = self.clock()
        known = self._known(cert, issuer, clock)
        if known.revoked is None and known.good is None:
            # one fetch at a time per certificate, across threads and processes sharing a
            # cache: whoever waited finds the answer its predecessor cached (a node's or a
            # cluster's tasks starting at once would otherwise each ask the responder)
            with self._single_flight(self._ocsp_key(cert, issuer), deadline) as waited:
                if waited:
                    clock = self.clock()
                    known = self._known(cert, issuer, clock)
                return self._check_known(cert, issuer, deadline, known, mk)
        return self._check_known(cert, issuer, deadline, known, mk)

    @contextlib.contextmanager
    def _single_flight(self, key: str, deadline: float):
        """Hold the fetch of `key` (a thread lock, then an flock in the first writable cache
        directory), waiting at most until `deadline`; yields whether anything was waited for.
        Locks that cannot be had in time or at all are skipped: they only save requests."""
        # waiting may use at most half of what is left: a holder that never finishes (or an
        # flock someone else holds) leaves the rest of the budget for our own fetch
        deadline = time.monotonic() + max(0.0, deadline - time.monotonic()) / 2
        with self._inflight_guard:
            lock = self._inflight.setdefault(key, threading.Lock())
        waited = not lock.acquire(blocking=False)
        held = (not waited) or lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        fd = None
        try:
            for d in self.cache.dirs:
                try:
                    os.makedirs(os.path.join(d, "inflight"), mode=0o755, exist_ok=True)
                    fd = os.open(os.path.join(d, "inflight", key), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                                 | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)   # only its owner can lock it
                    break
                except OSError:
                    continue
            if fd is not None:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        waited = True
                        if time.monotonic() >= deadline:
                            break
                        time.sleep(0.02)
            yield waited
        finally:
            if fd is not None:
                os.close(fd)
            if held:
                lock.release()

    def _check_known(self, cert, issuer, deadline: float, known: _Known, mk) -> Status:
        if known.revoked is not None:
            src, why, facts = known.revoked
            return mk(REVOKED, src, why, None, facts)
        if known.good is not None:
            return mk(GOOD, "cache (ocsp)", *known.good)
        errors = []
        crl_urls = self._crl_urls(cert)
        crl_needs_time = self.cfg.crl_fallback and known.fresh_crl is None and bool(crl_urls)
        urls = self._ocsp_urls(cert, issuer)
        if urls:
            t = time.monotonic()
            until = t + max(0.0, deadline - t) * OCSP_SHARE if crl_needs_time else deadline
            try:
                return mk(*self._ocsp(cert, issuer, urls, until))
            except RevocationError as e:
                errors.append(f"OCSP: {e}")
        else:
            errors.append("OCSP: no responder URL")
        if self.cfg.crl_fallback:
            if known.fresh_crl is not None:
                return mk(GOOD, "cache (crl)", A.crl_not_listed(known.fresh_crl), self._crl_until(known.fresh_crl))
            try:
                return mk(*self._crl(cert, issuer, crl_urls, deadline))
            except RevocationError as e:
                errors.append(f"CRL: {e}")
        return mk(ERROR, "none", "; ".join(errors))

    # --- what the caches already prove -----------------------------------------------
    def _ocsp_key(self, cert, issuer) -> str:
        return DirCache.key(issuer_hashes(issuer, "sha256")[1], str(cert.serial_number))

    def _crl_prefix(self, issuer) -> str:
        return issuer_hashes(issuer, "sha256")[1].hex()

    def _crl_key(self, issuer, url: str) -> str:
        return f"{self._crl_prefix(issuer)}-{DirCache.key(url)[:32]}"

    def _cached_crls(self, issuer) -> list:
        prefix = self._crl_prefix(issuer)
        if self._crl_memo is not None and prefix in self._crl_memo:
            return self._crl_memo[prefix]
        out = []
        for data in self.cache.entries("crl", prefix, self.crl_max_bytes):
            try:
                out.append(A.authentic_crl(data, issuer))
            except RevocationError:
                continue
        if self._crl_memo is not None:
            self._crl_memo[prefix] = out
        return out

    def _known(self, cert, issuer, clock: A.Clock) -> _Known:
        """What the caches prove without asking anyone: a revocation (fresh or, except a
        hold, stale; OCSP or CRL), else a current OCSP good and a current complete CRL."""
        good = None
        expired = A.expired(cert, clock)
        for der in self.cache.get("ocsp", self._ocsp_key(cert, issuer), self.ocsp_max_bytes):
            try:
                proof = self._authentic(der, cert, issuer, clock, at_production=True)
            except RevocationError:
                continue
            try:
                A.ocsp_current(proof, clock, from_cache=True)
                fresh = True
            except RevocationError:
                fresh = False
            st, why = A.ocsp_status(proof)
            if st == REVOKED and (fresh or not A.ocsp_is_hold(proof)):
                return _Known(("cache (ocsp)" if fresh else "cache (ocsp, stale)", why, A.ocsp_revocation(proof)))
            if st == GOOD and fresh and good is None and A.signer_valid_at(proof, clock.now, clock.skew) and (
                    not expired or A.keeps_expired(A.ocsp_archive_cutoff(proof), cert)):
                good = (why, self._ocsp_until(proof))
        fresh_crl, urls = None, self._crl_urls(cert)
        for crl in self._cached_crls(issuer):
            try:
                A.crl_current(crl, clock)
                fresh = True
            except RevocationError:
                fresh = False
            listing = A.crl_listing(crl, cert.serial_number)
            if listing is not None:
                why, hold = listing
                if fresh or not hold:
                    return _Known(("cache (crl)" if fresh else "cache (crl, stale)", why,
                                   A.crl_revocation(crl, cert.serial_number)))
            elif fresh and A.crl_covers(crl, cert, urls) and (
                    not expired or A.keeps_expired(A.crl_expired_certs_on(crl), cert)) and (
                    fresh_crl is None or crl.last_update_utc > fresh_crl.last_update_utc):
                fresh_crl = crl
        return _Known(None, good, fresh_crl)

    def _authentic(self, der, cert, issuer, clock, at_production=False) -> A.OcspProof:
        """`answers.authentic_ocsp`, plus: a delegated responder the node knows to be revoked
        (listed in a cached CRL of the issuer) is not believed, id-pkix-ocsp-nocheck or not."""
        proof = A.authentic_ocsp(der, cert, issuer, clock, at_production)
        if proof.signer != issuer:
            for crl in self._cached_crls(issuer):
                listed = A.crl_listing(crl, proof.signer.serial_number)
                if listed is not None:
                    raise RevocationError(f"delegated responder certificate is revoked ({listed[0]})")
        return proof

    # --- compatibility helpers (complete checks of one document) ------------------------
    def validate(self, der: bytes, cert, issuer, nonce: bytes | None, cache: bool = False) -> tuple[str, str]:
        """Check an OCSP response completely (authentic, current, nonce); (status, description)."""
        clock = self.clock()
        proof = self._authentic(der, cert, issuer, clock)
        A.ocsp_current(proof, clock, from_cache=cache)
        if nonce is not None:
            A.ocsp_nonce_matches(proof, nonce)
        return A.ocsp_status(proof)

    def _valid_crl(self, data: bytes, issuer: x509.Certificate):
        crl = A.authentic_crl(data, issuer)
        A.crl_current(crl, self.clock())
        return crl

    # --- OCSP over the network ----------------------------------------------------------
    def _ocsp_urls(self, cert, issuer) -> list[str]:
        ifp = fingerprint(issuer)
        for r in self.cfg.responders:
            if r.issuer.lower().replace(":", "") in ("sha256" + ifp,) or \
                    fnmatch.fnmatchcase(issuer.subject.rfc4514_string(), r.issuer):
                return [r.url]
        aia = A.extension(cert, x509.AuthorityInformationAccess)
        return [a.access_location.value for a in (aia or [])
                if a.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(a.access_location, x509.UniformResourceIdentifier)
                and a.access_location.value.startswith(("http://", "https://"))]

    def _ocsp(self, cert, issuer, urls: list[str], until: float) -> tuple:
        """(status, "ocsp", description, good_until, RevokedFacts or None)."""
        last, no_archive = "no answer", None
        for attempt in range(self.cfg.retries + 1):
            for url in urls:
                if time.monotonic() >= until:
                    break
                kind, st, why, der, extra = self._ask(url, cert, issuer, until)
                if kind == "answer":
                    if st in (GOOD, REVOKED):
                        self.cache.put("ocsp", self._ocsp_key(cert, issuer), der)
                    return (st, "ocsp", why, extra if st == GOOD else None,
                            extra if st == REVOKED else None)
                if kind == "unauthorized" and not A.is_ca(cert):
                    return (UNKNOWN, "ocsp", f"{url}: the issuer's responder does not vouch for this certificate "
                            "(unauthorized); a CRL cannot show that its issuer issued it", None, None)
                if kind == "no archive":
                    no_archive = why
                last = why
            if no_archive:
                last = no_archive    # what an outage of another URL must not hide
                break                # asking again gets the same authentic answer: the CRL decides
            left = until - time.monotonic()
            if attempt < self.cfg.retries and left > 0:
                time.sleep(min(_RETRY_PAUSE, left))
        if time.monotonic() >= until:
            last += " (OCSP budget used up)"
        raise RevocationError(last)

    def _ask(self, url, cert, issuer, until) -> tuple:
        """One responder, SHA-256 then SHA-1 CertID: ("answer", status, why, der, good_until
        for a good / RevokedFacts for a revoked / None), ("no archive", "", why, b"", None) for a
        good about an expired certificate that is no evidence, ("unauthorized", "", why, b"", None)
        or ("outage", "", why, b"", None)."""
        refusals = []
        for alg in ("sha256", "sha1"):
            nonce = os.urandom(16) if self.cfg.nonce else None
            b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, A.HASHES[alg]())
            if nonce:
                b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
            body = b.build().public_bytes(serialization.Encoding.DER)
            try:
                der = self.fetcher.fetch(url, until, self.ocsp_max_bytes, body, "application/ocsp-request")
                resp = A.load_ocsp(der)
            except RevocationError as e:
                return "outage", "", str(e) if str(e).startswith(url) else f"{url}: {e}", b"", None
            if resp.response_status in _OUTAGES:
                return "outage", "", f"{url}: responder said {_status_name(resp.response_status)}", b"", None
            if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                refusals.append(resp.response_status)     # maybe it knows only the other CertID hash
                continue
            clock = self.clock()
            try:
                proof = self._authentic(der, cert, issuer, clock)
                A.ocsp_current(proof, clock, from_cache=False)
                if nonce is not None:
                    A.ocsp_nonce_matches(proof, nonce)
            except RevocationError as e:
                return "outage", "", f"{url}: {e}", b"", None
            st, why = A.ocsp_status(proof)
            if st == REVOKED:
                return "answer", st, why, der, A.ocsp_revocation(proof)
            if st == GOOD and A.expired(cert, clock) and not A.keeps_expired(A.ocsp_archive_cutoff(proof), cert):
                return ("no archive", "", f"{url}: good about a certificate that expired "
                        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}, but the response has no archiveCutoff "
                        "at or before its notAfter (the responder may have forgotten its revocation)", b"", None)
            return "answer", st, why, der, self._ocsp_until(proof)
        said = "/".join(dict.fromkeys(_status_name(s) for s in refusals))
        if ocsp.OCSPResponseStatus.UNAUTHORIZED in refusals:
            return "unauthorized", "", f"{url}: responder said {said}", b"", None
        return "outage", "", f"{url}: responder said {said}", b"", None

    # --- CRL -------------------------------------------------------------------------
    @staticmethod
    def _crl_urls(cert) -> list[str]:
        dps = A.extension(cert, x509.CRLDistributionPoints)
        return [n.value for dp in (dps or []) for n in (dp.full_name or [])
                if isinstance(n, x509.UniformResourceIdentifier)]

    def _crl(self, cert, issuer, urls: list[str], deadline: float) -> tuple:
        """(status, "crl", description, good_until, RevokedFacts or None)."""
        if not urls:
            raise RevocationError("no CRL distribution point")
        last = ""
        clock = self.clock()
        for url in urls:
            try:
                data = self._fetch_crl(url, deadline)
                crl = A.authentic_crl(data, issuer)
                A.crl_current(crl, clock)
            except RevocationError as e:
                last = str(e) if str(e).startswith(url) else f"{url}: {e}"
                continue
            self.cache.put("crl", self._crl_key(issuer, url), data)
            listing = A.crl_listing(crl, cert.serial_number)
            if listing is not None:
                return REVOKED, "crl", listing[0], None, A.crl_revocation(crl, cert.serial_number)
            if not A.crl_covers(crl, cert, urls):
                last = f"{url}: CRL does not cover this certificate (partitioned or delta CRL)"
                continue
            if A.expired(cert, clock) and not A.keeps_expired(A.crl_expired_certs_on(crl), cert):
                last = (f"{url}: the certificate expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ} and the CRL "
                        "has no ExpiredCertsOnCRL at or before its notAfter (not listed proves nothing)")
                continue
            return GOOD, "crl", A.crl_not_listed(crl), self._crl_until(crl), None
        raise RevocationError(last or "no usable CRL")

    def _ocsp_until(self, proof) -> float:
        """Until when a good OCSP answer stays current: its nextUpdate, and never later
        than thisUpdate + revocation.max_age (what a cached answer may be trusted for)."""
        s = proof.single
        t = (s.this_update_utc + dt.timedelta(seconds=self.cfg.max_age)).timestamp()
        return min(t, s.next_update_utc.timestamp()) if s.next_update_utc is not None else t

    def _crl_until(self, crl) -> float:
        t = (crl.last_update_utc + dt.timedelta(seconds=self.cfg.max_age)).timestamp()
        return min(t, crl.next_update_utc.timestamp()) if crl.next_update_utc is not None else t

    def _fetch_crl(self, url: str, deadline: float) -> bytes:
        path = file_url_path(url)
        if path is not None:
            return read_regular_file(path, self.crl_max_bytes)
        if not url.startswith(("http://", "https://")):
            raise RevocationError("unsupported CRL URL scheme")
        return self.fetcher.fetch(url, deadline, self.crl_max_bytes)
