"""Load and validate the policy YAML with errors that name file, line and key.

PyYAML's composer keeps each node's position; the validator walks nodes, so an
unknown key (`revokation:`), a wrong type or a bad value is reported as
`policy.yaml:4: unknown key 'revokation' in the top level (did you mean 'revocation'?)`.
"""

from __future__ import annotations

import dataclasses
import json
import os

from sifguard.errors import BadInputError
from sifguard.policy import globs
from sifguard.policy import model as m

yaml = None   # imported on first use: the compiled snapshot path never needs the parser (~20 ms)


class PolicyError(BadInputError):
    """The policy file is unreadable or invalid."""


class SnapshotError(PolicyError):
    """A compiled snapshot (or a hand-built Policy) breaks an invariant `load` guarantees."""


class _V:
    def __init__(self, path: str):
        self.path = path

    def err(self, node, msg: str):
        line = node.start_mark.line + 1 if node is not None else 1
        raise PolicyError(f"{self.path}:{line}: {msg}")

    def mapping(self, node, where: str, allowed: dict) -> dict:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{where} must be a mapping")
        out = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key not in allowed:
                import difflib
                hint = difflib.get_close_matches(str(key), list(allowed), 1)
                self.err(k, f"unknown key '{key}' in {where}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f"; allowed: {', '.join(allowed)}")
            if key in out:
                self.err(k, f"duplicate key '{key}' in {where}")
            out[key] = v
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
COMPILED_VERSION = 3     # 2: globs re-validated on load; 3: runtime.direct


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
    for x in pol.roots:
        text(x)
    if not pol.roots:
        raise SnapshotError("snapshot: no trust roots")
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
        for p in rule.signers:
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
    if pol.revocation.mode not in m.MODES:
        raise SnapshotError("snapshot: invalid revocation mode")
    if pol.runtime.direct not in m.DIRECT:
        raise SnapshotError("snapshot: invalid runtime.direct")


def _build(d: dict) -> m.Policy:
    rev = dict(d["revocation"])
    rev["responders"] = tuple(m.Responder(**r) for r in _tuple(rev["responders"]))
    rules = tuple(m.Rule(**{**r, "match": m.Match(**{k: _tuple(v) for k, v in r["match"].items()}),
                            "signers": tuple(m.SignerPattern(**p) for p in _tuple(r["signers"]))})
                  for r in _tuple(d["rules"]))
    rt = dict(d["runtime"])
    rt["allow_sources"] = _tuple(rt["allow_sources"])
    return m.Policy(path=d["path"], version=d["version"], roots=_tuple(d["roots"]),
                    intermediates=_tuple(d["intermediates"]), revocation=m.Revocation(**rev), rules=rules,
                    runtime=m.Runtime(**rt), audit_log=d["audit_log"], image_cache=d["image_cache"])


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
                                              "rules": 1, "runtime": 1, "cache": 1})
    if "version" not in top:
        v.err(root, "missing 'version: 1'")
    version = int(v.number(top["version"], "version", 1, 1, integer=True))
    base = os.path.dirname(os.path.abspath(path))
    absolute = lambda p: p if os.path.isabs(p) else os.path.join(base, p)  # noqa: E731

    if "trust" not in top:
        v.err(root, "missing 'trust' (trust.roots lists the site's root certificates)")
    trust = v.mapping(top["trust"], "trust", {"roots": 1, "intermediates": 1})
    if "roots" not in trust:
        v.err(top["trust"], "missing 'trust.roots'")
    if isinstance(trust["roots"], yaml.SequenceNode) and not trust["roots"].value:
        v.err(trust["roots"], "trust.roots is empty: nothing would be trusted")
    roots = tuple(absolute(p) for p in v.strings(trust["roots"], "trust.roots"))
    if not roots:
        v.err(trust["roots"], "trust.roots is empty: nothing would be trusted")
    inters = tuple(absolute(p) for p in v.strings(trust["intermediates"], "trust.intermediates")) \
        if "intermediates" in trust else ()

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

    rules = []
    if "rules" in top:
        if not isinstance(top["rules"], yaml.SequenceNode):
            v.err(top["rules"], "rules must be a list")
        names = set()
        for n in top["rules"].value:
            rules.append(_rule(v, n, names))
    return m.Policy(path=path, version=version, roots=roots, intermediates=inters, revocation=rev,
                    rules=tuple(rules), runtime=runtime, audit_log=audit_log, image_cache=image_cache)


def _rule(v: _V, n, names: set) -> m.Rule:
    r = v.mapping(n, "a rule", {"name": 1, "match": 1, "action": 1, "require": 1, "signers": 1, "revocation": 1})
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
        kw["require"] = v.choice(r["require"], f"{where} require", m.REQUIRES)
    if "revocation" in r:
        node = r["revocation"]
        if isinstance(node, yaml.MappingNode):
            rr = v.mapping(node, f"{where} revocation", {"mode": 1})
            kw["revocation_mode"] = v.choice(rr["mode"], f"{where} revocation.mode", m.MODES) if "mode" in rr else None
        else:
            kw["revocation_mode"] = v.choice(node, f"{where} revocation", m.MODES)
    if "signers" in r:
        if not isinstance(r["signers"], yaml.SequenceNode) or not r["signers"].value:
            v.err(r["signers"], f"{where} signers must be a non-empty list")
        pats = []
        for sn in r["signers"].value:
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
        kw["signers"] = tuple(pats)
    if kw.get("require") == "any" and "signers" in kw:
        v.err(n, f"{where}: 'require: any' with 'signers' is contradictory")
    return m.Rule(name=name, match=match, line=n.start_mark.line + 1, **kw)


def _is_sha256(s: str) -> bool:
    h = s.lower()[7:].replace(":", "")
    return len(h) == 64 and all(c in "0123456789abcdef" for c in h)
