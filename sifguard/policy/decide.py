"""Pure policy decisions: which rule applies, and whether a signer satisfies it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
TYPE_CHECKING = False   # (no `typing` import: the per-task hooks import as little as they can)

from sifguard.policy import globs as _globs
from sifguard.policy.model import DEFAULT_RULE, Policy, Rule, SignerPattern

if TYPE_CHECKING:   # pure policy: no cryptography import on the hooks' fast paths
    from sifguard.x509.chain import SignerIdentity


class _Unknown:
    """A job attribute no trusted source established (the task environment is not one)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self):
        return (_Unknown, ())


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class JobContext:
    """Who asks, in which job. None: the job has no such attribute (e.g. no account);
    UNKNOWN: it could not be established from a trusted source — rule selection then
    considers every rule the attribute could select (see `candidate_rules`)."""

    user: str | None | _Unknown = None
    group: str | None | _Unknown = None
    account: str | None | _Unknown = None
    partition: str | None | _Unknown = None
    job_id: str | None = None

    def as_dict(self) -> dict:
        return {k: ("(unknown)" if v is UNKNOWN else v) for k, v in self.__dict__.items() if v is not None}

    @property
    def complete(self) -> bool:
        return UNKNOWN not in (self.user, self.group, self.account, self.partition)


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


MAYBE = "maybe"   # a rule that matches or not depending on an UNKNOWN attribute


def _any(globs: tuple[str, ...], value) -> bool | str:
    if not globs:
        return True
    if value is UNKNOWN:
        return MAYBE
    return value is not None and any(_globs.name_matches(g, value) for g in globs)


def rule_applies(rule: Rule, image: str, ctx: JobContext) -> bool | str:
    """True, False, or MAYBE (when the answer depends on an attribute that is UNKNOWN)."""
    m = rule.match
    if m.path and not any(path_matches(g, image) for g in m.path):
        return False
    parts = (_any(m.user, ctx.user), _any(m.group, ctx.group), _any(m.account, ctx.account),
             _any(m.partition, ctx.partition))
    if False in parts:
        return False
    return MAYBE if MAYBE in parts else True


def rule_matches(rule: Rule, image: str, ctx: JobContext) -> bool:
    return rule_applies(rule, image, ctx) is True


def candidate_rules(policy: Policy, image: str, ctx: JobContext) -> tuple[Rule, ...]:
    """The rules that may govern this image for this job, in policy order.

    With a complete context this is the one first-matching rule (or the built-in
    default). With UNKNOWN attributes it is every rule that could be first for some
    value of them, up to the first rule that matches whatever they are: a decision
    must satisfy all of them, so an untrusted context can only make it stricter."""
    out = []
    for rule in policy.rules:
        a = rule_applies(rule, image, ctx)
        if a is True:
            out.append(rule)
            return tuple(out)
        if a == MAYBE:
            out.append(rule)
    out.append(DEFAULT_RULE)
    return tuple(out)


def match_rule(policy: Policy, image: str, ctx: JobContext) -> Rule:
    """First matching rule wins; an unmatched image gets the built-in default (signed)."""
    return candidate_rules(policy, image, ctx)[0] if ctx.complete else next(
        (r for r in policy.rules if rule_matches(r, image, ctx)), DEFAULT_RULE)


def uses_job_attributes(policy: Policy) -> frozenset[str]:
    """Which of account/partition/group the policy's rules look at (a hook need not ask
    Slurm for what no rule reads)."""
    return frozenset(k for r in policy.rules for k in ("account", "partition", "group")
                     if getattr(r.match, k))


def signer_matches(p: SignerPattern, who: SignerIdentity, issuer_fingerprints: tuple[str, ...]) -> bool:
    if p.subject and not _globs.name_matches(p.subject, who.subject):
        return False
    if p.email and not any(_globs.name_matches(p.email.lower(), e.lower()) for e in who.emails):
        return False
    if p.fingerprint and who.fingerprint.lower() != p.fingerprint:
        return False
    if p.issuer:
        if p.issuer.lower().startswith("sha256:"):
            want = p.issuer.lower()[7:].replace(":", "")
            if want not in issuer_fingerprints:
                return False
        elif not _globs.name_matches(p.issuer, who.issuer):
            return False
    return True


def signer_allowed(rule: Rule, who: SignerIdentity, issuer_fingerprints: tuple[str, ...] = ()) -> bool:
    """No `signers` list: any signer chaining to the trust roots; else any pattern must match."""
    return not rule.signers or any(signer_matches(p, who, issuer_fingerprints) for p in rule.signers)


def quorum_met(policy: Policy, rule: Rule, signers: list, key) -> tuple[bool, list[tuple[int, int]]]:
    """Whether the rule's N-of-M quorum holds for these signers (objects with `.identity` and
    `.issuers`, as enforce.core.Signer), with the assignment (slot index, index into `signers`).

    Only signers the rule's inline `signers:` patterns allow count (`signer_allowed`): a quorum
    signer must match its slot's set AND the rule's `signers`, if given. `key(signer)` is the
    distinctness key (the SHA-256 of the signer's public key: two certificates of one key
    count once). A rule without a quorum: (True, []). See policy/quorum.satisfy for the bounds."""
    if rule.quorum is None:
        return True, []
    from sifguard.policy import quorum
    idx = [i for i, s in enumerate(signers) if signer_allowed(rule, s.identity, s.issuers)]
    ok, assignment = quorum.satisfy(quorum.slot_patterns(policy, rule.quorum), [signers[i] for i in idx],
                                    rule.quorum.count, lambda p, s: signer_matches(p, s.identity, s.issuers),
                                    key=key)
    return ok, [(slot, idx[j]) for slot, j in assignment]
