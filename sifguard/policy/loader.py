"""Load and validate the policy YAML with errors that name file, line and key.

PyYAML's composer keeps each node's position; the validator walks nodes, so an
unknown key (`revokation:`), a wrong type or a bad value is reported as
`policy.yaml:4: unknown key 'revokation' in the top level (did you mean 'revocation'?)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from sifguard.errors import BadInputError
from sifguard.policy import globs
from sifguard.policy import model as m

yaml = None   # imported on first use: the compiled snapshot path never needs the parser (~20 ms)


class PolicyError(BadInputError):
    """The policy file is unreadable or invalid."""


class SnapshotError(PolicyError):
    """A compiled snapshot (or a hand-built Policy) breaks an invariant `load` guarantees."""


class _Map(dict):
    """A validated mapping: key → value node, and `at[key]` → the key's own node (its line)."""

    at: dict


def _did_you_mean(word, choices) -> str:
    import difflib
    hint = difflib.get_close_matches(str(word), list(choices), 1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


class _V:
    def __init__(self, path: str):
        self.path = path

    def err(self, node, msg: str):
        line = node.start_mark.line + 1 if node is not None else 1
        raise PolicyError(f"{self.path}:{line}: {msg}")

    def mapping(self, node, where: str, allowed) -> _Map:
        """`allowed`: the keys allowed (any iterable of names), or None: any plain scalar key."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{where} must be a mapping")
        out = _Map()
        out.at = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is None and allowed is None:
                self.err(k, f"a key in {where} must be a single value")
            if allowed is not None and key not in allowed:
                self.err(k, f"unknown key '{key}' in {where}" + _did_you_mean(key, allowed)
                         + f"; allowed: {', '.join(allowed)}")
            if key in out:
                self.err(k, f"duplicate key '{key}' in {where}")
            out[key] = v
            out.at[key] = k
        return out

    def scalar(self, node, where: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, f"{where} must be a single value")
        return node.value

    def string(self, node, where: str) -> str:
        """A non-blank string. Null (`~`, `null`, nothing) and booleans are refused rather
        than read as text: a value that silently became "" or "~" could widen a rule."""
        s = self.scalar(node, where)
        if node.tag == NULL_TAG:
            self.err(node, f"{where} must be a non-empty string, not null"
                     + (f" ('{s}')" if s else " (nothing after the colon)"))
        if node.tag == BOOL_TAG:
            self.err(node, f"{where} must be a string, not the boolean '{s}' (quote it)")
        if not s.strip():
            self.err(node, f"{where} must be a non-empty string")
        return s

    def choice(self, node, where: str, choices) -> str:
        s = self.scalar(node, where)
        if s not in choices:
            self.err(node, f"{where} must be one of {', '.join(choices)}, not '{s}'")
        return s

    def number(self, node, where: str, lo: float, hi: float, integer=False) -> float:
        s = self.scalar(node, where)
        try:
            v = int(s) if integer else float(s)
        except ValueError:
            self.err(node, f"{where} must be a {'whole ' if integer else ''}number, not '{s}'")
        if not lo <= v <= hi:
            self.err(node, f"{where} must be between {lo} and {hi}")
        return v

    def boolean(self, node, where: str) -> bool:
        s = self.scalar(node, where).lower()
        if s in ("true", "yes", "on"):
            return True
        if s in ("false", "no", "off"):
            return False
        self.err(node, f"{where} must be true or false")

    def strings(self, node, where: str, empty: str | None = None) -> tuple[str, ...]:
        """A string or a list of strings. `empty`: why an empty list is an error (None: allowed)."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value and empty:
                self.err(node, f"{where} is an empty list: {empty}")
            return tuple(self.string(n, where) for n in node.value)
        return (self.string(node, where),)

    def globs(self, node, where: str, path: bool) -> tuple[str, ...]:
        """A non-empty string or list of globs, each compiled now (errors name the line)."""
        vals = self.strings(node, where, "it would constrain nothing (omit the key to match everything)")
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for s, n in zip(vals, items):
            self.glob(n, s, where, path)
        return vals

    def glob(self, node, s: str, where: str, path: bool) -> None:
        try:
            (globs.compile_path if path else globs.compile_name)(s)
        except globs.GlobError as e:
            self.err(node, f"{where}: invalid glob '{s}': {e}")


NULL_TAG, BOOL_TAG = "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
MATCH_KEYS = ("path", "user", "group", "account", "partition")
SIGNER_GLOBS = ("subject", "email", "issuer")


COMPILED_SUFFIX = ".sifguard-compiled.json"
COMPILED_VERSION = 5     # 2: globs re-validated on load; 3: runtime.direct; 4: verification levels,
                         # quorum, signer sets, trust.tsa_roots; 5: metrics.textfile
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _stat_key(st: os.stat_result) -> list:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _tuple(v) -> tuple:
    if not isinstance(v, list):
        raise SnapshotError("snapshot: a list expected")
    return tuple(v)


def _from_dict(d: dict) -> m.Policy:
    """The policy of a snapshot, re-validated: a snapshot cannot carry what `load` refuses."""
    pol = _build(d)
    check_model(pol)
    return pol


def check_model(pol: m.Policy) -> None:
    """Invariants `load` guarantees, checked on a policy from elsewhere (SnapshotError)."""
    def text(x) -> str:
        if not isinstance(x, str) or not x.strip():
            raise SnapshotError(f"snapshot: {x!r} is not a non-empty string")
        return x
    for kind in ("roots", "intermediates", "tsa_roots"):
        if not isinstance(getattr(pol, kind), tuple):
            raise SnapshotError(f"snapshot: {kind} must be a list")
        for x in getattr(pol, kind):
            text(x)
    if not pol.roots:
        raise SnapshotError("snapshot: no trust roots")
    if not isinstance(pol.signer_sets, tuple):
        raise SnapshotError("snapshot: signer_sets must be a list")
    names = set()
    for entry in pol.signer_sets:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise SnapshotError("snapshot: a signer set is not (name, patterns)")
        name, pats = entry
        if not isinstance(name, str) or not SET_NAME.match(name) or name in names:
            raise SnapshotError(f"snapshot: bad or duplicate signer set name {name!r}")
        names.add(name)
        if not pats:
            raise SnapshotError(f"snapshot: signer set {name!r} is empty")
        _check_patterns(pats, text)
    for rule in pol.rules:
        text(rule.name)
        if rule.action not in m.ACTIONS or rule.require not in m.REQUIRES or \
                rule.revocation_mode not in (None, *m.MODES):
            raise SnapshotError(f"snapshot: rule {rule.name!r} has an invalid action/require/revocation")
        for k in MATCH_KEYS:
            vals = getattr(rule.match, k)
            if not isinstance(vals, tuple):
                raise SnapshotError("snapshot: match values must be lists")
            for g in vals:
                (globs.compile_path if k == "path" else globs.compile_name)(text(g))
        _check_patterns(rule.signers, text)
        problem = _rule_problem(rule, names)
        if problem:
            raise SnapshotError(f"snapshot: rule {rule.name!r}: {problem}")
    if pol.revocation.mode not in m.MODES:
        raise SnapshotError("snapshot: invalid revocation mode")
    if pol.runtime.direct not in m.DIRECT:
        raise SnapshotError("snapshot: invalid runtime.direct")
    if pol.metrics_textfile is not None and textfile_problem(pol.metrics_textfile):
        raise SnapshotError("snapshot: invalid metrics_textfile")


def textfile_problem(p) -> str | None:
    """Why `p` cannot be metrics.textfile (None: it can): an absolute path to a `.prom`
    file, the only files node_exporter's textfile collector reads."""
    if not isinstance(p, str) or not p.strip() or "\0" in p or "\n" in p:
        return "metrics.textfile must be a path"
    if not os.path.isabs(p):
        return f"metrics.textfile must be an absolute path, not '{p}'"
    if not p.endswith(".prom") or p.endswith("/.prom"):
        return f"metrics.textfile must name a .prom file (node_exporter's textfile collector reads only those), not '{p}'"
    return None


def _check_patterns(pats, text) -> None:
    if not isinstance(pats, tuple):
        raise SnapshotError("snapshot: signer patterns must be a list")
    for p in pats:
        if not isinstance(p, m.SignerPattern):
            raise SnapshotError("snapshot: a signer pattern is not a mapping")
        given = {k: getattr(p, k) for k in ("subject", "email", "fingerprint", "issuer")
                 if getattr(p, k) is not None}
        if not given:
            raise SnapshotError("snapshot: an empty signer pattern")
        for k, g in given.items():
            text(g)
            if k == "fingerprint":
                if not _is_sha256("sha256:" + g):
                    raise SnapshotError("snapshot: bad signer fingerprint")
            elif k == "issuer" and g.lower().startswith("sha256:"):
                if not _is_sha256(g):
                    raise SnapshotError("snapshot: bad signer issuer fingerprint")
            else:
                globs.compile_name(g)


def _rule_problem(rule: m.Rule, set_names) -> str | None:
    """What is wrong with a rule's verification and quorum (None: nothing) — the same
    conditions the YAML loader reports with their lines."""
    ver = rule.verification
    if not isinstance(ver, m.Verification) or ver.level not in m.LEVELS or ver.timestamp not in m.TIMESTAMP \
            or not isinstance(ver.overrides, tuple):
        return "invalid verification"
    seen = set()
    for o in ver.overrides:
        if not isinstance(o, tuple) or len(o) != 2 or o[0] not in m.CHECKS or o[0] == "integrity" \
                or o[1] not in m.CHECK_ACTIONS or o[0] in seen:
            return f"invalid verification override {o!r}"
        seen.add(o[0])
    if ver.level == "skip" and (ver.overrides or ver.timestamp == "required"):
        return "verification level skip with overrides or a required timestamp"
    q = rule.quorum
    if q is not None:
        if not isinstance(q, m.Quorum) or type(q.count) is not int or not isinstance(q.slots, tuple) \
                or not 1 <= q.count <= len(q.slots) <= m.MAX_QUORUM_SLOTS:
            return "invalid quorum"
        if any(s not in set_names for s in q.slots):
            return "quorum names an unknown signer set"
        if rule.require != "signed":
            return "a quorum with require any"
    if rule.require == "any" and (ver != m.Verification() or rule.signers):
        return "require any with verification or signers"
    if rule.signers or q is not None:
        if ver.level == "skip":
            return "verification level skip with signers or a quorum"
        if dict(ver.overrides).get("authenticity") == "skip":
            return "authenticity skipped with signers or a quorum"
    if rule.revocation_mode == "off" and dict(ver.overrides).get("revocation") in ("enforce", "log"):
        return "revocation off with a revocation override"
    return None


def _build(d: dict) -> m.Policy:
    def patterns(v) -> tuple:
        return tuple(m.SignerPattern(**p) for p in _tuple(v))

    def rule(r: dict) -> m.Rule:
        ver = dict(r["verification"])
        ver["overrides"] = tuple(_tuple(o) for o in _tuple(ver["overrides"]))
        q = r["quorum"]
        if q is not None:
            q = m.Quorum(**{**q, "slots": _tuple(q["slots"])})
        return m.Rule(**{**r, "match": m.Match(**{k: _tuple(v) for k, v in r["match"].items()}),
                         "signers": patterns(r["signers"]), "verification": m.Verification(**ver),
                         "quorum": q})
    rev = dict(d["revocation"])
    rev["responders"] = tuple(m.Responder(**r) for r in _tuple(rev["responders"]))
    rules = tuple(rule(r) for r in _tuple(d["rules"]))
    rt = dict(d["runtime"])
    rt["allow_sources"] = _tuple(rt["allow_sources"])
    sets = tuple((name, patterns(pats)) for name, pats in (_tuple(e) for e in _tuple(d["signer_sets"])))
    return m.Policy(path=d["path"], version=d["version"], roots=_tuple(d["roots"]),
                    intermediates=_tuple(d["intermediates"]), revocation=m.Revocation(**rev), rules=rules,
                    runtime=m.Runtime(**rt), audit_log=d["audit_log"], image_cache=d["image_cache"],
                    tsa_roots=_tuple(d["tsa_roots"]), signer_sets=sets, metrics_textfile=d["metrics_textfile"])


def load_fast(path: str) -> m.Policy:
    """`load`, through a compiled JSON snapshot beside the policy when one is valid.

    The snapshot is written by whoever owns the policy (root, in the Slurm hooks) and is
    used only if that owner (or root) owns it, nobody else can write it, and it records
    the policy file's current device, inode, size, mtime and ctime — any edit makes it
    stale. It spares the per-job-step hooks the YAML parser (~20 ms).
    """
    try:
        st = os.stat(path)
    except OSError:
        return load(path)
    snap = path + COMPILED_SUFFIX
    try:
        sst = os.stat(snap)
        if sst.st_uid in (0, st.st_uid) and not sst.st_mode & 0o022:
            with open(snap, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("compiled_version") == COMPILED_VERSION and d.get("source") == _stat_key(st):
                return _from_dict(d["policy"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, globs.GlobError, SnapshotError):
        pass      # unusable or invalid snapshot: parse and validate the YAML itself
    pol = load(path)
    if os.geteuid() in (0, st.st_uid):
        try:
            tmp = f"{snap}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"compiled_version": COMPILED_VERSION, "source": _stat_key(st),
                           "policy": dataclasses.asdict(pol)}, f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, snap)
        except OSError:
            pass
    return pol


def load(path: str) -> m.Policy:
    global yaml
    if yaml is None:
        import yaml
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read policy: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: policy is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise PolicyError(f"{path}:{line}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    v = _V(path)
    if root is None:
        raise PolicyError(f"{path}:1: empty policy")
    top = v.mapping(root, "the top level", {"version": 1, "trust": 1, "revocation": 1, "audit": 1,
                                              "rules": 1, "runtime": 1, "cache": 1, "signers": 1, "metrics": 1})
    if "version" not in top:
        v.err(root, "missing 'version: 1'")
    version = int(v.number(top["version"], "version", 1, 1, integer=True))
    base = os.path.dirname(os.path.abspath(path))
    absolute = lambda p: p if os.path.isabs(p) else os.path.join(base, p)  # noqa: E731

    if "trust" not in top:
        v.err(root, "missing 'trust' (trust.roots lists the site's root certificates)")
    trust = v.mapping(top["trust"], "trust", {"roots": 1, "intermediates": 1, "tsa_roots": 1})
    if "roots" not in trust:
        v.err(top["trust"], "missing 'trust.roots'")
    if isinstance(trust["roots"], yaml.SequenceNode) and not trust["roots"].value:
        v.err(trust["roots"], "trust.roots is empty: nothing would be trusted")
    roots = tuple(absolute(p) for p in v.strings(trust["roots"], "trust.roots"))
    if not roots:
        v.err(trust["roots"], "trust.roots is empty: nothing would be trusted")
    inters = tuple(absolute(p) for p in v.strings(trust["intermediates"], "trust.intermediates")) \
        if "intermediates" in trust else ()
    tsa_roots = tuple(absolute(p) for p in v.strings(
        trust["tsa_roots"], "trust.tsa_roots", "omit the key to let the site roots vouch for time-stamping "
        "authorities")) if "tsa_roots" in trust else ()

    rev = m.Revocation()
    if "revocation" in top:
        r = v.mapping(top["revocation"], "revocation", {
            "mode": 1, "timeout": 1, "retries": 1, "nonce": 1, "crl_fallback": 1, "cache_dir": 1,
            "shared_cache_dir": 1, "max_age": 1, "clock_skew": 1, "responders": 1})
        kw = {}
        if "mode" in r:
            kw["mode"] = v.choice(r["mode"], "revocation.mode", m.MODES)
        if "timeout" in r:
            kw["timeout"] = v.number(r["timeout"], "revocation.timeout", 0.1, 60)
        if "retries" in r:
            kw["retries"] = int(v.number(r["retries"], "revocation.retries", 0, 5, integer=True))
        for b in ("nonce", "crl_fallback"):
            if b in r:
                kw[b] = v.boolean(r[b], f"revocation.{b}")
        for d in ("cache_dir", "shared_cache_dir"):
            if d in r:
                kw[d] = absolute(v.string(r[d], f"revocation.{d}"))
        if "max_age" in r:
            kw["max_age"] = int(v.number(r["max_age"], "revocation.max_age", 0, 30 * 86400, integer=True))
        if "clock_skew" in r:
            kw["clock_skew"] = int(v.number(r["clock_skew"], "revocation.clock_skew", 0, 3600, integer=True))
        if "responders" in r:
            if not isinstance(r["responders"], yaml.SequenceNode):
                v.err(r["responders"], "revocation.responders must be a list")
            out = []
            for n in r["responders"].value:
                e = v.mapping(n, "a revocation.responders entry", {"issuer": 1, "url": 1})
                if "issuer" not in e or "url" not in e:
                    v.err(n, "a responders entry needs 'issuer' and 'url'")
                url = v.string(e["url"], "responders.url")
                iss = v.string(e["issuer"], "responders.issuer")
                if iss.lower().startswith("sha256:"):
                    if not _is_sha256(iss):
                        v.err(e["issuer"], "responders.issuer must be a DN glob or sha256:<64 hex digits>")
                else:
                    v.glob(e["issuer"], iss, "responders.issuer", path=False)
                if not url.startswith(("http://", "https://")):
                    v.err(e["url"], f"responder url must be http(s), not '{url}'")
                out.append(m.Responder(iss, url))
            kw["responders"] = tuple(out)
        rev = m.Revocation(**kw)

    audit_log = None
    if "audit" in top:
        a = v.mapping(top["audit"], "audit", {"log": 1})
        if "log" in a:
            audit_log = absolute(v.string(a["log"], "audit.log"))

    metrics_textfile = None
    if "metrics" in top:
        mt = v.mapping(top["metrics"], "metrics", {"textfile": 1})
        if "textfile" in mt:
            metrics_textfile = v.string(mt["textfile"], "metrics.textfile")
            problem = textfile_problem(metrics_textfile)
            if problem:
                v.err(mt["textfile"], problem)

    image_cache = "/var/cache/sifguard/images"
    if "cache" in top:
        c = v.mapping(top["cache"], "cache", {"images": 1})
        if "images" in c:
            s = v.scalar(c["images"], "cache.images")
            image_cache = None if s.lower() in ("off", "false", "none", "") else absolute(s)

    runtime = m.Runtime()
    if "runtime" in top:
        rt = v.mapping(top["runtime"], "runtime", {"allow_sources": 1, "apptainer": 1, "singularity": 1,
                                                   "allow_build": 1, "allow_pull": 1, "direct": 1})
        kw = {}
        if "allow_sources" in rt:
            srcs = v.strings(rt["allow_sources"], "runtime.allow_sources")
            for s, n in zip(srcs, rt["allow_sources"].value if isinstance(rt["allow_sources"], yaml.SequenceNode)
                            else [rt["allow_sources"]]):
                if s.rstrip(":/") not in m.SOURCES:
                    v.err(n, f"unknown image source '{s}' (choose from {', '.join(m.SOURCES)})")
            kw["allow_sources"] = tuple(s.rstrip(":/") for s in srcs)
        for k in ("apptainer", "singularity"):
            if k in rt:
                kw[k] = v.string(rt[k], f"runtime.{k}")
        for k in ("allow_build", "allow_pull"):
            if k in rt:
                kw[k] = v.boolean(rt[k], f"runtime.{k}")
        if "direct" in rt:
            kw["direct"] = v.choice(rt["direct"], "runtime.direct", m.DIRECT)
        runtime = m.Runtime(**kw)

    sets = _signer_sets(v, top["signers"]) if "signers" in top else ()
    rules = []
    if "rules" in top:
        if not isinstance(top["rules"], yaml.SequenceNode):
            v.err(top["rules"], "rules must be a list")
        names = set()
        for n in top["rules"].value:
            rules.append(_rule(v, n, names, dict(sets)))
    return m.Policy(path=path, version=version, roots=roots, intermediates=inters, revocation=rev,
                    rules=tuple(rules), runtime=runtime, audit_log=audit_log, image_cache=image_cache,
                    tsa_roots=tsa_roots, signer_sets=sets, metrics_textfile=metrics_textfile)


def _signer_sets(v: _V, node) -> tuple:
    """The top-level `signers:` mapping: set name → non-empty list of signer patterns."""
    sm = v.mapping(node, "signers (named signer sets)", None)
    if not sm:
        v.err(node, "signers is empty: it names no signer set (omit it)")
    out = []
    for name, pn in sm.items():
        if sm.at[name].tag == NULL_TAG or not SET_NAME.match(name):
            v.err(sm.at[name], f"signer set name '{name}' is not a plain name (letters, digits, '_', '.', '-'; "
                               "at most 64, starting with a letter or digit)")
        out.append((name, _patterns(v, pn, f"signer set '{name}'", f"signer set '{name}' must be a non-empty "
                                                                    "list of signer patterns", {})))
    return tuple(out)


def _patterns(v: _V, node, where: str, not_list: str, sets: dict) -> tuple[m.SignerPattern, ...]:
    """A non-empty list of signer patterns (a rule's `signers:` or a named set); `not_list`:
    the error when it is not one; `sets`: the signer set names (a set named here is a mistake)."""
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        v.err(node, not_list)
    pats = []
    for sn in node.value:
        if isinstance(sn, yaml.ScalarNode) and sn.value in sets:
            v.err(sn, f"'{sn.value}' in {where} signers is a signer set: a rule names sets in "
                      f"'require: {{count: N, signers: [{sn.value}, ...]}}'")
        s = v.mapping(sn, f"a signer of {where}", {"subject": 1, "email": 1, "fingerprint": 1, "issuer": 1})
        if not s:
            v.err(sn, f"an empty signer pattern in {where} would match anyone")
        vals = {k: v.string(x, f"{where} signer {k}") for k, x in s.items()}
        if "fingerprint" in vals:
            fp = vals["fingerprint"].lower().replace(":", "")
            fp = fp[6:] if fp.startswith("sha256") else fp
            if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
                v.err(s["fingerprint"], f"{where} signer fingerprint must be sha256:<64 hex digits>")
            vals["fingerprint"] = fp
        for k in SIGNER_GLOBS:
            if k in vals and not (k == "issuer" and vals[k].lower().startswith("sha256:")):
                v.glob(s[k], vals[k], f"{where} signer {k}", path=False)
        if vals.get("issuer", "").lower().startswith("sha256:") and not _is_sha256(vals["issuer"]):
            v.err(s["issuer"], f"{where} signer issuer must be a DN glob or sha256:<64 hex digits>")
        pats.append(m.SignerPattern(line=sn.start_mark.line + 1, **vals))
    return tuple(pats)


def _rule(v: _V, n, names: set, sets: dict) -> m.Rule:
    r = v.mapping(n, "a rule", {"name": 1, "match": 1, "action": 1, "require": 1, "signers": 1, "revocation": 1,
                                "verification": 1})
    if "name" not in r:
        v.err(n, "a rule needs a 'name'")
    name = v.string(r["name"], "rule name")
    if name in names:
        v.err(r["name"], f"duplicate rule name '{name}'")
    names.add(name)
    where = f"rule '{name}'"
    match = m.Match()
    if "match" in r:
        mm = v.mapping(r["match"], f"{where} match", dict.fromkeys(MATCH_KEYS, 1))
        if not mm:
            v.err(r["match"], f"{where} match is empty: it would constrain nothing (omit 'match' to match "
                              "everything)")
        match = m.Match(**{k: v.globs(x, f"{where} match.{k}", path=k == "path") for k, x in mm.items()})
    kw = {}
    if "action" in r:
        kw["action"] = v.choice(r["action"], f"{where} action", m.ACTIONS)
    if "require" in r:
        if isinstance(r["require"], yaml.MappingNode):
            kw["quorum"] = _quorum(v, r["require"], r.at["require"], where, sets)
        else:
            kw["require"] = v.choice(r["require"], f"{where} require", m.REQUIRES)
    if "revocation" in r:
        node = r["revocation"]
        if isinstance(node, yaml.MappingNode):
            rr = v.mapping(node, f"{where} revocation", {"mode": 1})
            kw["revocation_mode"] = v.choice(rr["mode"], f"{where} revocation.mode", m.MODES) if "mode" in rr else None
        else:
            kw["revocation_mode"] = v.choice(node, f"{where} revocation", m.MODES)
    if "signers" in r:
        kw["signers"] = _patterns(v, r["signers"], where, f"{where} signers must be a non-empty list", sets)
    if kw.get("require") == "any" and "signers" in kw:
        v.err(n, f"{where}: 'require: any' with 'signers' is contradictory")
    if "verification" in r:
        if kw.get("require") == "any":
            v.err(r.at["verification"], f"{where}: 'require: any' with 'verification' is contradictory "
                                        "(nothing is verified)")
        kw["verification"] = ver = _verification(v, r["verification"], where, "signers" in kw or "quorum" in kw)
        if kw.get("revocation_mode") == "off" and dict(ver.overrides).get("revocation") in ("enforce", "log"):
            v.err(r.at["verification"], f"{where}: 'revocation: off' with a revocation override "
                                        f"'{dict(ver.overrides)['revocation']}' is contradictory (off checks nothing)")
    return m.Rule(name=name, match=match, line=n.start_mark.line + 1, **kw)


def _quorum(v: _V, node, key_node, where: str, sets: dict) -> m.Quorum:
    """`require: {count: N, signers: [set, ...]}`: N distinct signers filling the named slots.
    `key_node`: the `require` key (where a missing part is reported)."""
    q = v.mapping(node, f"{where} require", {"count": 1, "signers": 1})
    for k, what in (("signers", "the signer sets to fill"), ("count", "how many of them must be filled")):
        if k not in q:
            v.err(key_node, f"{where} require needs '{k}' ({what})")
    if not sets:
        v.err(q["signers"], f"{where} require.signers names signer sets, but the policy defines none "
                            "(a top-level 'signers:' mapping)")
    slots = v.strings(q["signers"], f"{where} require.signers", "a quorum needs at least one signer set")
    items = q["signers"].value if isinstance(q["signers"], yaml.SequenceNode) else [q["signers"]]
    for s, sn in zip(slots, items):
        if s not in sets:
            v.err(sn, f"{where} require.signers: unknown signer set '{s}'" + _did_you_mean(s, sets)
                  + f"; defined: {', '.join(sets)}")
    if len(slots) > m.MAX_QUORUM_SLOTS:
        v.err(q["signers"], f"{where} require.signers names {len(slots)} slots, at most "
                            f"{m.MAX_QUORUM_SLOTS} are allowed")
    count = int(v.number(q["count"], f"{where} require.count", 1, m.MAX_QUORUM_SLOTS, integer=True))
    if count > len(slots):
        v.err(q["count"], f"{where} require.count {count} is more than the {len(slots)} signer set slot(s) "
                          "named: it could never be met")
    return m.Quorum(count=count, slots=slots)


def _verification(v: _V, node, where: str, constrained: bool) -> m.Verification:
    """`verification: {level, override, timestamp}` (or `verification: LEVEL`). `constrained`:
    the rule names signers or a quorum, which only authenticity checking can honour."""
    if not isinstance(node, yaml.MappingNode):
        level_node, vm = node, _Map()
        vm.at = {}
    else:
        vm = v.mapping(node, f"{where} verification", {"level": 1, "override": 1, "timestamp": 1})
        level_node = vm.get("level")
    kw = {}
    if level_node is not None:
        kw["level"] = v.choice(level_node, f"{where} verification.level", m.LEVELS)
    if "timestamp" in vm:
        kw["timestamp"] = v.choice(vm["timestamp"], f"{where} verification.timestamp", m.TIMESTAMP)
    skip = kw.get("level") == "skip"
    if skip and constrained:
        v.err(level_node, f"{where}: verification level skip with signers or a quorum is contradictory "
                          "(skip checks no signature)")
    if skip and kw.get("timestamp") == "required":
        v.err(vm["timestamp"], f"{where}: verification level skip with 'timestamp: required' is "
                               "contradictory (skip checks nothing)")
    if "override" in vm:
        if skip:
            v.err(vm.at["override"], f"{where}: verification level skip takes no override (it skips every "
                                     "check)")
        om = v.mapping(vm["override"], f"{where} verification.override", m.CHECKS)
        if not om:
            v.err(vm["override"], f"{where} verification.override is empty (omit it)")
        if "integrity" in om:
            v.err(om.at["integrity"], f"{where}: integrity cannot be overridden (only 'level: skip' skips it)")
        overrides = tuple((c, v.choice(x, f"{where} verification.override.{c}", m.CHECK_ACTIONS))
                          for c, x in om.items())
        if constrained and dict(overrides).get("authenticity") == "skip":
            v.err(om.at["authenticity"], f"{where}: 'authenticity: skip' with signers or a quorum is "
                                         "contradictory (no signer would be checked)")
        kw["overrides"] = overrides
    return m.Verification(**kw)


def _is_sha256(s: str) -> bool:
    h = s.lower()[7:].replace(":", "")
    return len(h) == 64 and all(c in "0123456789abcdef" for c in h)
