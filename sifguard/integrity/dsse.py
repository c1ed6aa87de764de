"""The DSSE envelope as sylabs/sif writes it, with sifguard's certificate-chain member.

Go decodes the envelope with encoding/json and ignores unknown members, and no digest
covers a signature object, so a per-signature ``x5c`` member (base64 DER, leaf first,
as in JWS) is invisible to Apptainer yet lets sifguard build the path to site roots.
Likewise ``rfc3161``: base64 DER RFC 3161 TimeStampTokens whose messageImprint is the
SHA-256 of that entry's signature value — proof the signature existed at the token's
genTime, so it can be judged after its certificate expires.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

PAYLOAD_TYPE = "application/vnd.sylabs.sif-metadata+json"


class EnvelopeError(ValueError):
    """The bytes are not a DSSE envelope sifguard can read."""


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes
    x5c: tuple[bytes, ...] = ()     # DER certificates, leaf first
    timestamps: tuple[bytes, ...] = ()   # DER RFC 3161 tokens over `sig`


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        """Go-compatible compact JSON; `x5c` only where a certificate was given."""
        sigs = []
        for s in self.signatures:
            entry = {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()}
            if s.x5c:
                entry["x5c"] = [base64.b64encode(c).decode() for c in s.x5c]
            if s.timestamps:
                entry["rfc3161"] = [base64.b64encode(t).decode() for t in s.timestamps]
            sigs.append(entry)
        doc = {"payloadType": self.payload_type,
               "payload": base64.b64encode(self.payload).decode(), "signatures": sigs}
        return json.dumps(doc, separators=(",", ":")).encode()


def _b64(s, what: str) -> bytes:
    if not isinstance(s, str):
        raise EnvelopeError(f"{what} is not a string")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"{what} is not base64") from None


def decode(data: bytes) -> Envelope:
    """Parse an envelope; raises EnvelopeError when it is not one (a trailing newline is fine)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("not JSON") from None
    if not isinstance(doc, dict) or "payloadType" not in doc:
        raise EnvelopeError("no payloadType")
    sigs = doc.get("signatures") or []
    if not isinstance(sigs, list):
        raise EnvelopeError("signatures is not a list")
    out = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict):
            raise EnvelopeError(f"signature {i} is not an object")
        kid = s.get("keyid", "")
        chain = s.get("x5c") or []
        stamps = s.get("rfc3161") or []
        if not isinstance(kid, str) or not isinstance(chain, list) or not isinstance(stamps, list):
            raise EnvelopeError(f"signature {i} is malformed")
        out.append(EnvelopeSignature(kid, _b64(s.get("sig", ""), f"signature {i}"),
                                     tuple(_b64(c, f"signature {i} certificate") for c in chain),
                                     tuple(_b64(t, f"signature {i} time-stamp token") for t in stamps)))
    return Envelope(str(doc["payloadType"]), _b64(doc.get("payload", ""), "payload"), tuple(out))


def classify(data: bytes) -> tuple[str, "Envelope | None"]:
    """What a signature object holds: ("dsse", envelope), ("pgp" | "legacy-pgp" | "unknown", None).
    One decode, shared by verification and `inspect`."""
    try:
        env = decode(data)
        if env.payload_type == PAYLOAD_TYPE:
            return "dsse", env
    except EnvelopeError:
        pass
    if data.lstrip().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----"):
        body = data.split(b"\n\n", 1)[1] if b"\n\n" in data else b""
        return ("legacy-pgp" if body.startswith(b"SIFHASH:\n") else "pgp"), None
    return "unknown", None
