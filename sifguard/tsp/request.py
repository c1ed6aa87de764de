"""Asking a Time-Stamping Authority (RFC 3161 §3.4: HTTP POST of application/timestamp-query).

`request(message)` builds the query (SHA-256 imprint of the message, a random 64-bit nonce,
certReq so the token carries the TSA's certificates), `read_reply` checks the answer belongs
to it (granted, same imprint and nonce, a token that parses) and `fetch_token` does the
exchange within a deadline and a size cap (the bounded fetcher the revocation client uses).
Whether the token is *trusted* is decided at verification (sifguard.tsp.token.verify); a
signer may check it here too by passing the TSA roots.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass

from sifguard.errors import SifguardError
from sifguard.tsp import token as T

MAX_REPLY_BYTES = 64 << 10
CONTENT_TYPE = "application/timestamp-query"
_STATUS = {0: "granted", 1: "grantedWithMods", 2: "rejection", 3: "waiting", 4: "revocationWarning",
           5: "revocationNotification"}


class TsaError(SifguardError):
    """No usable token could be had from the TSA (exit 2: the image is left as it was)."""


@dataclass(frozen=True)
class Query:
    der: bytes
    imprint: bytes
    nonce: int
    policy: str | None


def request(message: bytes, policy: str | None = None, nonce: int | None = None) -> Query:
    from asn1crypto import algos, core, tsp
    digest = hashlib.sha256(message).digest()
    nonce = int.from_bytes(os.urandom(8), "big") >> 1 if nonce is None else nonce
    fields = {
        "version": "v1",
        "message_imprint": tsp.MessageImprint({
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}), "hashed_message": digest}),
        "nonce": nonce, "cert_req": True}
    if policy:
        try:
            fields["req_policy"] = core.ObjectIdentifier(policy)
        except ValueError:
            raise TsaError(f"{policy!r} is not a dotted object identifier (e.g. 1.3.6.1.4.1.99999.1)") from None
    return Query(tsp.TimeStampReq(fields).dump(), digest, nonce, policy)


@functools.cache
def _reply_type():
    """TimeStampResp with the token OPTIONAL, as RFC 3161 §2.4.2 has it (asn1crypto 1.5
    declares it mandatory, so it cannot read a rejection)."""
    from asn1crypto import cms, core, tsp

    class Reply(core.Sequence):
        _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]
    return Reply


def read_reply(der: bytes, q: Query) -> bytes:
    """The token of a reply to `q`, or TsaError saying why there is none."""
    try:
        resp = _reply_type().load(der, strict=True)
        code = resp["status"]["status"].native
    except Exception as e:  # noqa: BLE001 - hostile bytes
        raise TsaError(f"the TSA's reply is not a TimeStampResp ({type(e).__name__})") from None
    if code not in ("granted", "granted_with_mods"):
        try:
            info = resp["status"]["fail_info"].native
            text = resp["status"]["status_string"].native
        except Exception:  # noqa: BLE001 - the refusal stands whatever its details
            info = text = None
        why = ", ".join(sorted(info)) if info else ""
        raise TsaError(f"the TSA refused the request: {code}" + (f" ({why})" if why else "")
                       + (f": {'; '.join(text)}" if text else ""))
    try:
        token = resp["time_stamp_token"]
        present = token is not None and token.native is not None
    except Exception:  # noqa: BLE001
        present = False
    if not present:
        raise TsaError("the TSA granted the request but sent no token")
    tder = token.dump()
    try:
        tok = T.parse(tder)
    except T.TimestampError as e:
        raise TsaError(f"the TSA's token is unusable: {e}") from None
    if tok.imprint_alg != "sha256" or tok.imprint != q.imprint:
        raise TsaError("the TSA's token is over another message (messageImprint differs from the request)")
    if tok.nonce != q.nonce:
        raise TsaError("the TSA's token does not echo our nonce (a replayed or foreign answer)")
    if q.policy and tok.policy != q.policy:
        raise TsaError(f"the TSA answered under policy {tok.policy}, not the requested {q.policy}")
    return tder


def fetch_token(url: str, message: bytes, *, timeout: float = 10.0, policy: str | None = None,
                fetcher=None) -> bytes:
    """One token over `message` from the TSA at `url` (http/https), within `timeout` seconds."""
    if not url.startswith(("http://", "https://")):
        raise TsaError(f"{url}: a TSA URL must be http:// or https://")
    from sifguard.ocsp.answers import RevocationError
    from sifguard.ocsp.transport import Fetcher
    q = request(message, policy)
    fetcher = fetcher or Fetcher()
    try:
        der = fetcher.fetch(url, time.monotonic() + timeout, MAX_REPLY_BYTES, q.der, CONTENT_TYPE)
    except RevocationError as e:
        msg = str(e).replace("revocation budget", "TSA timeout")
        raise TsaError(msg if msg.startswith(url) else f"{url}: {msg}") from None
    return read_reply(der, q)
