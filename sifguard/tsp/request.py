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
from sifguard.tsp import der as der_

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


SHA256_ALG = b"\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00"   # AlgorithmIdentifier sha256, NULL


def request(message: bytes, policy: str | None = None, nonce: int | None = None) -> Query:
    """The DER TimeStampReq (RFC 3161 §2.4.1): v1, SHA-256 imprint of `message`, reqPolicy
    when given, a random 63-bit nonce, certReq TRUE. Encoded here: five fields do not need
    the ASN.1 library's ~40 ms import on every `sign --tsa`."""
    digest = hashlib.sha256(message).digest()
    nonce = int.from_bytes(os.urandom(8), "big") >> 1 if nonce is None else nonce
    body = der_.integer(1) + der_.encode(0x30, SHA256_ALG + der_.encode(0x04, digest))
    if policy:
        try:
            body += der_.oid(policy)
        except ValueError as e:
            raise TsaError(f"{e} (e.g. 1.3.6.1.4.1.99999.1)") from None
    body += der_.integer(nonce) + b"\x01\x01\xff"
    return Query(der_.encode(0x30, body), digest, nonce, policy)


def tst_fields(token: bytes) -> tuple[bytes, bytes, int | None, str]:
    """(imprint algorithm OID DER, imprint, nonce, policy) of a token, read by walking the DER
    (what the signer checks before writing; verification parses the whole token)."""
    ci = der_.children(der_.element(token))
    sd = der_.children(der_.children(ci[1])[0])
    eci = der_.children(sd[2])
    tst = der_.children(der_.element(der_.children(eci[1])[0].contents))
    policy = der_.oid_text(tst[1].contents)
    mi = der_.children(tst[2])
    alg = der_.children(mi[0])[0].raw
    nonce = None
    for f in tst[5:]:               # accuracy, ordering (optional), then the nonce INTEGER
        if f.tag == 0x02:
            nonce = int.from_bytes(f.contents, "big", signed=True)
            break
        if f.tag not in (0x30, 0x01):
            break
    return alg, mi[1].contents, nonce, policy


@functools.cache
def _reply_type():
    """TimeStampResp with the token OPTIONAL, as RFC 3161 §2.4.2 has it (asn1crypto 1.5
    declares it mandatory, so it cannot read a rejection)."""
    from asn1crypto import cms, core, tsp

    class Reply(core.Sequence):
        _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]
    return Reply


def _refusal(der: bytes, code: int) -> str:
    """The status, failInfo bits and text of a refusal (the ASN.1 library reads the details)."""
    what = _STATUS.get(code, f"status {code}")
    try:
        st = _reply_type().load(der)["status"]
        info, text = st["fail_info"].native, st["status_string"].native
    except Exception:  # noqa: BLE001 - the refusal stands whatever its details
        return what
    why = ", ".join(sorted(info)) if info else ""
    return what + (f" ({why})" if why else "") + (f": {'; '.join(text)}" if text else "")


def read_reply(der: bytes, q: Query) -> bytes:
    """The token of a reply to `q`, or TsaError saying why there is none."""
    try:
        items = der_.children(der_.element(der))
        status = der_.children(items[0])
        if status[0].tag != 0x02 or items[0].tag != 0x30:
            raise der_.DerError("not a PKIStatusInfo")
        code = int.from_bytes(status[0].contents, "big", signed=True)
    except (der_.DerError, IndexError) as e:
        raise TsaError(f"the TSA's reply is not a TimeStampResp ({e or type(e).__name__})") from None
    if code not in (0, 1):              # granted, grantedWithMods
        raise TsaError(f"the TSA refused the request: {_refusal(der, code)}")
    if len(items) < 2:
        raise TsaError("the TSA granted the request but sent no token")
    tder = items[1].raw          # the token's bytes as sent
    try:
        alg, imprint, nonce, policy = tst_fields(tder)
    except (der_.DerError, IndexError) as e:
        raise TsaError(f"the TSA's token is unusable: malformed ({e or type(e).__name__})") from None
    if alg != SHA256_ALG[2:13] or imprint != q.imprint:
        raise TsaError("the TSA's token is over another message (messageImprint differs from the request)")
    if nonce != q.nonce:
        raise TsaError("the TSA's token does not echo our nonce (a replayed or foreign answer)")
    if q.policy and policy != q.policy:
        raise TsaError(f"the TSA answered under policy {policy}, not the requested {q.policy}")
    return tder


def post(url: str, body: bytes, deadline: float, cap: int = MAX_REPLY_BYTES) -> bytes:
    """The 200 body of POSTing `body` to `url`, ending by `deadline` (time.monotonic()) whatever
    the peer does, never reading more than `cap` bytes.

    The standard library's http.client, not requests: `sign --tsa` makes one request per
    signature, and importing requests (≈105 ms here: charset_normalizer, certifi, urllib3)
    would cost more than the whole exchange. The exchange runs in a thread; at the deadline
    its socket is shut down, which ends whatever it is blocked in (a trickling peer cannot
    hold it). No proxy from the environment, no redirects."""
    import http.client
    import socket
    import threading
    from urllib.parse import urlsplit
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise TsaError(f"{url}: a TSA URL must be http:// or https://")
    if u.username or u.password:
        raise TsaError(f"{url}: credentials in the URL are not sent")
    left = deadline - time.monotonic()
    if left <= 0:
        raise TsaError(f"{url}: no time left")
    state: dict = {}
    done = threading.Event()

    def work():
        try:
            if u.scheme == "https":
                import ssl
                conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=left,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=left)
            state["conn"] = conn
            conn.request("POST", (u.path or "/") + (f"?{u.query}" if u.query else ""), body=body,
                         headers={"Content-Type": CONTENT_TYPE, "Accept": "application/timestamp-reply",
                                  "Connection": "close"})
            r = conn.getresponse()
            if r.status != 200:
                raise TsaError(f"{url}: HTTP {r.status}")
            n = r.getheader("Content-Length")
            if n and n.strip().isdigit() and int(n) > cap:
                raise TsaError(f"{url}: announces {n} bytes, more than the {cap}-byte limit")
            data = r.read(cap + 1)
            if len(data) > cap:
                raise TsaError(f"{url}: answer is larger than the {cap}-byte limit")
            state["data"] = data
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            state["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="sifguard-tsa", daemon=True).start()
    if not done.wait(left):
        conn = state.get("conn")
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise TsaError(f"{url}: no complete answer within the TSA timeout ({left:.3g} s)")
    conn = state.get("conn")
    if conn is not None:
        conn.close()
    e = state.get("error")
    if isinstance(e, TsaError):
        raise e
    if e is not None:
        raise TsaError(f"{url}: {type(e).__name__}: {str(e)[-160:]}")
    return state["data"]


def fetch_token(url: str, message: bytes, *, timeout: float = 10.0, policy: str | None = None) -> bytes:
    """One token over `message` from the TSA at `url` (http/https), within `timeout` seconds."""
    q = request(message, policy)
    return read_reply(post(url, q.der, time.monotonic() + timeout), q)
