"""Pure policy decisions: which rule applies, and whether a signer satisfies it."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache

from sifguard.policy import globs as _globs
from sifguard.policy.model import DEFAULT_RULE, Policy, Rule, SignerPattern
from sifguard.x509.chain import SignerIdentity


@dataclass(frozen=True)
class JobContext:
    user: str | None = None
    group: str | None = None
    account: str | None = None
    partition: str | None = None
    job_id: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@lru_cache(maxsize=256)
def _path_regex(glob: str) -> _globs.Glob:
    """The compiled path glob (language: sifguard.policy.globs). The loader rejects invalid
    globs; one that still arrives here (a hand-built Policy) compiles to "never matches"."""
    try:
        return _globs.compile_path(glob)
    except _globs.GlobError:
        return _globs.NEVER


def path_matches(glob: str, path: str) -> bool:
    """Total: never raises, whatever the glob or path."""
    try:
        return _path_regex(glob).match(path)
    except TypeError:          # unhashable glob (not a str)
        return False


def _any(globs: tuple[str, ...], value: str | None) -> bool:
    return not globs or (value is not None and any(fnmatch.fnmatchcase(value, g) for g in globs))


def rule_matches(rule: Rule, image: str, ctx: JobContext) -> bool:
    m = rule.match
    return ((not m.path or any(path_matches(g, image) for g in m.path))
            and _any(m.user, ctx.user) and _any(m.group, ctx.group)
            and _any(m.account, ctx.account) and _any(m.partition, ctx.partition))


def match_rule(policy: Policy, image: str, ctx: JobContext) -> Rule:
    """First matching rule wins; an unmatched image gets the built-in default (signed)."""
    for rule in policy.rules:
        if rule_matches(rule, image, ctx):
            return rule
    return DEFAULT_RULE


def signer_matches(p: SignerPattern, who: SignerIdentity, issuer_fingerprints: tuple[str, ...]) -> bool:
    if p.subject and not fnmatch.fnmatchcase(who.subject, p.subject):
        return False
    if p.email and not any(fnmatch.fnmatchcase(e.lower(), p.email.lower()) for e in who.emails):
        return False
    if p.fingerprint and who.fingerprint.lower() != p.fingerprint:
        return False
    if p.issuer:
        if p.issuer.lower().startswith("sha256:"):
            want = p.issuer.lower()[7:].replace(":", "")
            if want not in issuer_fingerprints:
                return False
        elif not fnmatch.fnmatchcase(who.issuer, p.issuer):
            return False
    return True


def signer_allowed(rule: Rule, who: SignerIdentity, issuer_fingerprints: tuple[str, ...] = ()) -> bool:
    """No `signers` list: any signer chaining to the trust roots; else any pattern must match."""
    return not rule.signers or any(signer_matches(p, who, issuer_fingerprints) for p in rule.signers)
