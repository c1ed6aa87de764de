"""Validation of everything an operator hands the CA, before any key is generated or any
row written: one clear BadInputError per problem, never an exception from cryptography's
builders halfway through an issuance.

Pure functions, no I/O. Limits are those of RFC 5280 (upper bounds of X.520 attributes,
serial numbers of at most 20 octets), RFC 5321 (e-mail addresses) and RFC 3986 (URLs).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import urllib.parse

from sifguard.errors import BadInputError

UB_COMMON_NAME = 64            # RFC 5280 ub-common-name (enforced on characters and UTF-8 bytes)
UB_ORGANIZATION_NAME = 64      # RFC 5280 ub-organization-name
CA_CN_SUFFIXES = (" Root CA", " Issuing CA", " OCSP Responder", " TSA")   # the CA's own CNs: "<site><suffix>"
MAX_SITE_NAME = UB_COMMON_NAME - max(map(len, CA_CN_SUFFIXES))
MAX_DAYS = 36500               # leaves: bounded again by the issuing CA's own validity
MAX_CRL_HOURS = 24 * 366
MAX_OCSP_HOURS = 24 * 31
MAX_SERIAL_OCTETS = 20         # RFC 5280 4.1.2.2

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_HEX = re.compile(r"[0-9A-Fa-f]+\Z")
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.,]+(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?\Z")
CLOCK_SKEW = dt.timedelta(minutes=5)   # an operator's "now" may run this much ahead of the CA's


def _text(value, what: str, limit: int) -> str:
    """A printable, non-blank, UTF-8-encodable string of at most `limit` characters."""
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"{what} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(f"{what} is not valid text (undecodable bytes)") from None
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), None)
    if bad is not None:
        raise BadInputError(f"{what} contains the control or unassigned character U+{ord(bad):04X}")
    if value != value.strip():
        raise BadInputError(f"{what} must not start or end with white space")
    if len(value) > limit:
        raise BadInputError(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    size = len(value.encode("utf-8"))
    if size > limit:      # cryptography (and many X.509 stacks) bound the encoded UTF8String
        raise BadInputError(f"{what} is {size} bytes in UTF-8; at most {limit} are allowed")
    return value


def common_name(value) -> str:
    return _text(value, "--cn", UB_COMMON_NAME)


def site_name(value) -> str:
    """`ca init --name`: the O of every certificate and the stem of the CA's own CNs."""
    return _text(value, "--name", MAX_SITE_NAME)


def email(value) -> str:
    """An RFC 5321 mailbox in ASCII (dot-atom local part, LDH domain)."""
    if not isinstance(value, str) or not value:
        raise BadInputError("--email must not be empty (omit it for no e-mail address)")
    if not value.isascii() or any(not c.isprintable() for c in value):
        raise BadInputError(f"--email {value!r}: only ASCII addresses are supported")
    if len(value) > 254:
        raise BadInputError(f"--email is {len(value)} characters long; at most 254 are allowed")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise BadInputError(f"--email {value!r} is not an address (local@domain)")
    if len(local) > 64 or not all(_ATEXT.match(p) for p in local.split(".")):
        raise BadInputError(f"--email {value!r}: invalid local part")
    if len(domain) > 253 or not all(_LABEL.match(p) for p in domain.split(".")):
        raise BadInputError(f"--email {value!r}: invalid domain")
    return value


def base_url(value) -> str:
    """`ca init --url`: an absolute http(s) URL with a host, baked into every certificate."""
    if not isinstance(value, str) or not value:
        raise BadInputError("--url must not be empty")
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise BadInputError(f"--url {value!r} must be ASCII without spaces (use the punycode host name)")
    try:
        u = urllib.parse.urlsplit(value)
        port = u.port
    except ValueError as e:
        raise BadInputError(f"--url {value!r}: {e}") from None
    if u.scheme not in ("http", "https"):
        raise BadInputError(f"--url must be an http(s) URL, not {value!r}")
    if not u.hostname:
        raise BadInputError(f"--url {value!r} has no host")
    if u.username is not None or u.password is not None:
        raise BadInputError("--url must not carry credentials (it is published in every certificate)")
    if u.query or u.fragment or value.endswith(("?", "#")):
        raise BadInputError(f"--url {value!r} must not have a query or fragment (it is a base URL)")
    if port == 0:
        raise BadInputError(f"--url {value!r}: port 0")
    return value


def whole_number(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(f"{what} must be a whole number")
    if not lo <= value <= hi:
        raise BadInputError(f"{what} must be between {lo} and {hi}, not {value}")
    return value


def days(value) -> int:
    return whole_number(value, "--days", 1, MAX_DAYS)


def serial(value) -> str:
    """A certificate serial as `ca list` and openssl print it: hex, optionally with colons
    between byte pairs or a 0x prefix. Returns upper-case hex without leading zeros."""
    if not isinstance(value, str):
        raise BadInputError("--serial must be hexadecimal")
    t = value.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    if ":" in t:
        parts = t.split(":")
        if not all(len(p) in (1, 2) for p in parts):
            raise BadInputError(f"serial {value!r} is not hexadecimal (colons go between byte pairs)")
        t = "".join(p.rjust(2, "0") for p in parts)
    if not _HEX.match(t):    # not int(t, 16): that also takes '_', '+', '-' and non-ASCII digits
        raise BadInputError(f"serial {value!r} is not hexadecimal")
    n = int(t, 16)
    if n == 0:
        raise BadInputError(f"serial {value!r}: serial numbers are positive")
    if (n.bit_length() + 8) // 8 > MAX_SERIAL_OCTETS:     # DER INTEGER octets, sign bit included
        raise BadInputError(f"serial {value!r} is longer than {MAX_SERIAL_OCTETS} octets")
    return f"{n:X}"


def passphrase(value: bytes | None, what: str) -> bytes | None:
    """An empty passphrase would silently write an unencrypted key: refuse it."""
    if value is not None and not value:
        raise BadInputError(f"{what} is empty: give a passphrase, or none for an unencrypted key")
    return value


def instant(value, what: str) -> dt.datetime:
    """An ISO-8601 date (midnight UTC) or date-time; UTC unless it carries an offset or Z."""
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"{what} must not be empty")
    t = value.strip()
    if not _ISO.match(t):    # fromisoformat alone also takes week dates and non-ASCII digits
        raise BadInputError(f"{what} {value!r} is not an ISO-8601 date or date-time (e.g. 2026-03-01T12:00:00Z)")
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadInputError(f"{what} {value!r} is not a valid date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    try:
        return when.astimezone(dt.timezone.utc).replace(microsecond=0)
    except OverflowError:
        raise BadInputError(f"{what} {value!r} is out of range") from None


def invalidity_date(when: dt.datetime, revoked_at: dt.datetime, what: str = "--invalidity-date") -> dt.datetime:
    """RFC 5280 §5.3.2: when the certificate became invalid; never after its revocation."""
    when = when.astimezone(dt.timezone.utc).replace(microsecond=0)
    if when > revoked_at + CLOCK_SKEW:
        raise BadInputError(f"{what} {when:%Y-%m-%dT%H:%M:%SZ} is in the future")
    if when > revoked_at:
        raise BadInputError(f"{what} {when:%Y-%m-%dT%H:%M:%SZ} is after the revocation time "
                            f"{revoked_at:%Y-%m-%dT%H:%M:%SZ}")
    return when
