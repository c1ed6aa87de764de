"""The doctor's bounded network questions: one OCSP request or CRL fetch per revocation
endpoint the hooks would use (through the Checker's own transport and validation), and
one trivial request to the stager."""

from __future__ import annotations

import fnmatch
import os
import re
import socket
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from sifguard.ca.ocsp_response import issuer_hashes
from sifguard.ocsp import answers as A
from sifguard.ocsp.answers import RevocationError
from sifguard.ocsp.client import OCSP_MAX_BYTES, Checker
from sifguard.x509.chain import fingerprint


@dataclass(frozen=True)
class Probe:
    kind: str                   # "ocsp" | "crl"
    url: str
    about: x509.Certificate | None    # the certificate asked about (OCSP), or None (a responder override)
    issuer: x509.Certificate
    label: str                  # human words: "OCSP for CN=… (issuer CN=…)"


def _name(c: x509.Certificate) -> str:
    return c.subject.rfc4514_string()


def probes(checker: Checker, certs: list[x509.Certificate]) -> list[Probe]:
    """Every endpoint the hooks would ask about these CA certificates: for each one issued by
    another of them, the OCSP URLs (policy override, else AIA — the Checker's own choice)
    and its CRL distribution points; each self-issued one's CRL DPs; and each responder
    override not already covered, asked about a serial its issuer never used."""
    out: list[Probe] = []
    seen: set[tuple[str, str]] = set()

    def add(p: Probe) -> None:
        if (p.kind, p.url) not in seen:
            seen.add((p.kind, p.url))
            out.append(p)
    for c in certs:
        issuer = next((i for i in certs if i.subject == c.issuer and _signed_by(c, i)), None)
        if issuer is None:
            continue
        if issuer is not c:
            for url in checker._ocsp_urls(c, issuer):     # noqa: SLF001 - the hooks' choice, not a copy of it
                add(Probe("ocsp", url, c, issuer, f"OCSP about {_name(c)}"))
        for url in Checker._crl_urls(c):                    # noqa: SLF001
            if url.startswith(("http://", "https://")):
                add(Probe("crl", url, None, issuer, f"CRL of {_name(issuer)}"))
    for r in checker.cfg.responders:
        if ("ocsp", r.url) in seen:
            continue
        issuer = next((i for i in certs if r.issuer.lower().replace(":", "") == "sha256" + fingerprint(i)
                       or fnmatch.fnmatchcase(_name(i), r.issuer)), None)
        if issuer is not None:
            add(Probe("ocsp", r.url, None, issuer, f"OCSP override for {_name(issuer)}"))
    return out


def _signed_by(c: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        c.verify_directly_issued_by(issuer)
        return True
    except Exception:  # noqa: BLE001 - any failure: not its issuer
        return False


def run_probe(checker: Checker, p: Probe, timeout: float) -> tuple[bool, str]:
    """(reachable and answering properly, what happened, with the latency)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    ms = lambda: f"{(time.monotonic() - t0) * 1000:.0f} ms"  # noqa: E731
    try:
        if p.kind == "crl":
            data = checker.fetcher.fetch(p.url, deadline, checker.crl_max_bytes)
            crl = A.authentic_crl(data, p.issuer)
            A.crl_current(crl, checker.clock())
            return True, f"{p.url}: current CRL of {_name(p.issuer)} ({ms()})"
        b = ocsp.OCSPRequestBuilder()
        if p.about is not None:
            b = b.add_certificate(p.about, p.issuer, hashes.SHA256())
        else:       # no certificate to ask about: a serial the issuer never used
            name_hash, key_hash = issuer_hashes(p.issuer, "sha256")
            b = b.add_certificate_by_hash(name_hash, key_hash, 1, hashes.SHA256())
        body = b.build().public_bytes(serialization.Encoding.DER)
        der = checker.fetcher.fetch(p.url, deadline, OCSP_MAX_BYTES, body, "application/ocsp-request")
        resp = A.load_ocsp(der)
        status = resp.response_status
        if status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            said = status.name.lower()
            if status == ocsp.OCSPResponseStatus.UNAUTHORIZED:
                return True, f"{p.url}: answers (unauthorized for this issuer: the CRL decides) ({ms()})"
            return False, f"{p.url}: responder said {said} ({ms()})"
        if p.about is None:
            return True, f"{p.url}: answers ({ms()})"
        st, why = checker.validate(der, p.about, p.issuer, None)
        if st == A.REVOKED:
            return False, f"{p.url}: {_name(p.about)} is REVOKED: {why} ({ms()})"
        return True, f"{p.url}: {st} ({ms()})"
    except RevocationError as e:
        return False, f"{p.url}: {_short(str(e), p.url)} (after {ms()})"
    except Exception as e:  # noqa: BLE001 - a probe reports, never raises
        return False, f"{p.url}: {type(e).__name__}: {e} (after {ms()})"


_CAUSES = re.compile(r"\[Errno -?\d+\] [^'\")]+|Read timed out|timed out|Name or service not known|"
                     r"Temporary failure in name resolution|HTTP \d{3}|no complete answer within the revocation budget")


def _short(text: str, url: str) -> str:
    """The cause in a transport error, without requests' nested reprs."""
    m = _CAUSES.search(text)
    if m:
        return m.group(0)
    return text[len(url) + 2:] if text.startswith(url + ": ") else text


def ping_stager(socket_path: str, timeout: float) -> tuple[bool, str]:
    """Connect, check the answering process is root (SO_PEERCRED), send a request without an
    image and expect the stager's refusal: proves a stager reads and answers, stages nothing."""
    from sifguard.store import wire
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        try:
            s.connect(socket_path)
        except OSError as e:
            return False, f"{socket_path}: not answering ({e.strerror or e})"
        uid = wire.peer_credentials(s)[1]
        if uid != 0:
            return False, f"{socket_path}: the process answering is uid {uid}, not root (the hooks ignore it)"
        try:
            wire.send(s, {"doctor": True})
            reply, fds = wire.recv(s, wire.MAX_REPLY, want_fd=True, deadline=t0 + timeout)
        except (OSError, wire.WireError) as e:
            return False, f"{socket_path}: no answer within {timeout:g} s ({e})"
        for fd in fds:
            os.close(fd)
        if not isinstance(reply, dict) or "ok" not in reply:
            return False, f"{socket_path}: an answer that is not the stager's"
        if reply.get("busy"):
            return True, f"{socket_path}: answers, but busy (connection limits reached) " \
                         f"({(time.monotonic() - t0) * 1000:.0f} ms)"
        return True, f"{socket_path}: the stager answers ({(time.monotonic() - t0) * 1000:.0f} ms)"
    except OSError as e:
        return False, f"{socket_path}: {e.strerror or e}"
    finally:
        s.close()
