"""The site policy as immutable data (what the YAML says, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("enforce", "soft-fail", "off")
ACTIONS = ("enforce", "audit")
REQUIRES = ("signed", "any")
SOURCES = ("local", "docker", "library", "oras", "shub", "http", "https", "instance")

# Verification levels, after notation's trust policy: which checks a rule enforces (a
# failure refuses), logs (a failure is recorded, the image allowed) or skips (not done).
# sifguard.policy.levels.actions() maps a Verification to one action per check.
CHECKS = ("integrity", "authenticity", "expiry", "revocation")
LEVELS = ("strict", "permissive", "audit", "skip")
CHECK_ACTIONS = ("enforce", "log", "skip")
TIMESTAMP = ("optional", "required")
MAX_QUORUM_SLOTS = 16


@dataclass(frozen=True)
class SignerPattern:
    """All fields given must match the signer; a rule's `signers` matches when any pattern does."""

    subject: str | None = None        # glob over the RFC 4514 subject, e.g. "CN=builder,*"
    email: str | None = None          # glob over e-mail SANs
    fingerprint: str | None = None    # "sha256:<hex>" of the signer certificate
    issuer: str | None = None         # glob over the issuer DN, or "sha256:<hex>" of an issuing CA cert
    line: int = 0


@dataclass(frozen=True)
class Responder:
    issuer: str                       # issuer DN glob or "sha256:<hex>" of the issuer certificate
    url: str


@dataclass(frozen=True)
class Revocation:
    mode: str = "enforce"
    timeout: float = 2.0              # seconds: every OCSP/CRL exchange of one decision ends by then
    retries: int = 1
    nonce: bool = False
    crl_fallback: bool = True
    cache_dir: str = "/var/cache/sifguard"
    shared_cache_dir: str | None = None
    max_age: int = 86400              # seconds a cached response may be used, even before nextUpdate
    clock_skew: int = 300
    responders: tuple[Responder, ...] = ()


@dataclass(frozen=True)
class Match:
    path: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    group: tuple[str, ...] = ()
    account: tuple[str, ...] = ()
    partition: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    """A rule's verification level, per-check overrides and RFC 3161 timestamp requirement."""

    level: str = "strict"
    overrides: tuple[tuple[str, str], ...] = ()   # (check, action) as given in the YAML, checks in CHECKS
    timestamp: str = "optional"                    # required: a signature needs a valid RFC 3161 token;
                                                   # optional: a valid token is used when present


@dataclass(frozen=True)
class Quorum:
    """N-of-M: `count` of the `slots` must be filled, each by a distinct signer (by public
    key) matching the slot's named signer set (Policy.signer_sets). See policy/quorum.py."""

    count: int                                     # distinct signers needed, >= 1, <= len(slots)
    slots: tuple[str, ...]                         # names of signer sets; may repeat


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match = field(default_factory=Match)
    action: str = "enforce"
    require: str = "signed"
    signers: tuple[SignerPattern, ...] = ()
    revocation_mode: str | None = None
    line: int = 0
    verification: Verification = field(default_factory=Verification)
    quorum: Quorum | None = None       # with `signers` too: a quorum signer must also match them


DEFAULT_RULE = Rule(name="default (built-in)", require="signed", action="enforce")


@dataclass(frozen=True)
class Runtime:
    allow_sources: tuple[str, ...] = ("local",)
    apptainer: str = "/usr/bin/apptainer"
    singularity: str = "/usr/bin/singularity"
    allow_build: bool = False
    allow_pull: bool = False
    direct: str = "refuse"            # the runtime or a SIF run by path, not through the shim: refuse | check


DIRECT = ("refuse", "check")


@dataclass(frozen=True)
class Policy:
    path: str
    version: int
    roots: tuple[str, ...]
    intermediates: tuple[str, ...] = ()
    revocation: Revocation = field(default_factory=Revocation)
    rules: tuple[Rule, ...] = ()
    runtime: Runtime = field(default_factory=Runtime)
    audit_log: str | None = None
    image_cache: str | None = "/var/cache/sifguard/images"
    tsa_roots: tuple[str, ...] = ()    # trust.tsa_roots; empty: the site roots also vouch for TSAs
    signer_sets: tuple[tuple[str, tuple[SignerPattern, ...]], ...] = ()   # top-level `signers:`, in order
    metrics_textfile: str | None = None   # metrics.textfile: node_exporter textfile-collector counters

    def signer_set(self, name: str) -> tuple[SignerPattern, ...] | None:
        """The patterns of a named signer set, None if there is no such set."""
        return next((pats for n, pats in self.signer_sets if n == name), None)
