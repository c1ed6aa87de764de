#!/usr/bin/env python3
"""Fresh OCSP signing rate: what `ca serve` pays for every request with a nonce (and for
every re-signed pre-signed answer). sifguard's Signer (answers with archiveCutoff and
invalidityDate singleExtensions) against the peer, cryptography's OCSPResponseBuilder
signing the same answer without them, per CA key type and status. Prints answers/s and
the ratio to the peer. In-process, no network; each run is bounded to --seconds.

Usage: tests/bench/ocsp_signing.py [--seconds 2]
"""
import argparse
import datetime as dt
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from sifguard.ca import ocsp_response as oc  # noqa: E402
from sifguard.ca import store as castore  # noqa: E402
from sifguard.ca.profiles import REASONS, sig_hash  # noqa: E402


def rate(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    print(f"signed OCSP answers/s, nonce in every request, {a.seconds:g} s per run, one core")
    with tempfile.TemporaryDirectory() as d:
        for kt in ("ec-p256", "ec-p384", "rsa-3072", "ed25519"):
            s = castore.init(f"{d}/{kt}", "Bench", "http://127.0.0.1:9", kt)
            issuer, responder, key = s.intermediate, s.responder, s.key(castore.OCSP_KEY)
            signer = oc.Signer(issuer, key, responder, dt.timedelta(hours=4), s.created)
            name_hash, key_hash = oc.issuer_hashes(issuer, "sha1")
            revoked_at = int(time.time()) - 60
            for status, rec in (("good", ("valid", None, None, None)),
                                ("revoked", ("revoked", revoked_at, "keyCompromise", revoked_at - 3600))):
                def request():
                    b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, 4242, hashes.SHA1())
                    b = b.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
                    return oc.parse_request(b.build().public_bytes(serialization.Encoding.DER))

                def ours():
                    signer.answer(request(), lambda _s: rec, dt.datetime.now(dt.timezone.utc))

                def peer():
                    q = request()
                    now = dt.datetime.now(dt.timezone.utc)
                    if status == "good":
                        st, rtime, reason = ocsp.OCSPCertStatus.GOOD, None, None
                    else:
                        st = ocsp.OCSPCertStatus.REVOKED
                        rtime, reason = dt.datetime.fromtimestamp(revoked_at, dt.timezone.utc), REASONS["keyCompromise"]
                    (ocsp.OCSPResponseBuilder()
                     .add_response_by_hash(q.issuer_name_hash, q.issuer_key_hash, q.serial, hashes.SHA1(), st,
                                           now - dt.timedelta(minutes=1), now + dt.timedelta(hours=4), rtime, reason)
                     .responder_id(ocsp.OCSPResponderEncoding.HASH, responder).certificates([responder])
                     .add_extension(x509.OCSPNonce(q.nonce), critical=False)
                     .sign(key, sig_hash(key)).public_bytes(serialization.Encoding.DER))

                base = rate(peer, a.seconds)
                mine = rate(ours, a.seconds)
                print(f"{kt:<9} {status:<8} cryptography builder (peer) {base:8.0f}/s   "
                      f"sifguard Signer {mine:8.0f}/s   ratio {mine / base:5.2f}")
            s.db.close()


if __name__ == "__main__":
    main()
