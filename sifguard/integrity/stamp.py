"""Time-stamping signatures already in an image (`sifguard timestamp`).

Each DSSE entry of the chosen groups' signature objects whose signature verifies with the
certificate it carries, and whose certificate is valid now, gets one more RFC 3161 token
(over its signature value). A signature object cannot grow in place, so the updated
envelope is appended as a new signature object linked like the old one, and only then is
the old one removed (its bytes zeroed): a crash in between leaves both, each verifying on
its own. Nothing but signature objects changes; no digest covers them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sifguard.errors import BadInputError, RefusedError
from sifguard.integrity import dsse
from sifguard.integrity.verify import MAX_TOKENS
from sifguard.sif.format import DT_SIGNATURE
from sifguard.sif.image import NewObject, SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import ChainError, load_embedded


@dataclass(frozen=True)
class Stamped:
    group: int
    old_object: int
    new_object: int
    entries: tuple[str, ...]          # subjects of the entries that got a token
    skipped: tuple[str, ...]          # "subject: why" of those that did not


def _eligible(entry: dsse.EnvelopeSignature, pae: bytes, hashtype: int, now: dt.datetime) -> tuple[str, str]:
    """(who, why not or "")."""
    try:
        certs = load_embedded(entry.x5c)
    except ChainError as e:
        return entry.keyid or "?", str(e)
    if not certs:
        return entry.keyid or "?", "carries no certificate (a bare-key signature has no validity to outlive)"
    leaf = certs[0]
    who = leaf.subject.rfc4514_string()
    if not keys.verify(leaf.public_key(), entry.sig, pae, hashtype):
        return who, "signature does not verify with its certificate"
    if now < leaf.not_valid_before_utc:
        return who, f"certificate not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}"
    if now > leaf.not_valid_after_utc:
        return who, (f"certificate expired {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}: a token made now "
                     "would prove nothing")
    if len(entry.timestamps) >= MAX_TOKENS:
        return who, f"already carries {len(entry.timestamps)} time-stamps (verification weighs {MAX_TOKENS})"
    return who, ""


def plan(img: SifImage, stamp, groups: list[int] | None = None, now: dt.datetime | None = None):
    """[(old descriptor, NewObject, Stamped-without-ids)] — tokens fetched, nothing written."""
    now = now or dt.datetime.now(dt.timezone.utc)
    targets = groups or img.group_ids()
    for g in groups or []:
        if not img.group_objects(g):
            raise BadInputError(f"no object group {g} in {img.path}")
    out = []
    for g in targets:
        sig_objs = img.signatures_for_group(g) + [
            so for d in img.group_objects(g) for so in img.signatures_for_object(d.id)]
        for so in sig_objs:
            kind, env = dsse.classify(img.read_object(so))
            if env is None:
                continue
            pae = dsse.pae(env.payload_type, env.payload)
            hashtype = so.signature_info()[0]
            entries, done, skipped = [], [], []
            for e in env.signatures:
                who, why = _eligible(e, pae, hashtype, now)
                if why:
                    skipped.append(f"{who}: {why}")
                    entries.append(e)
                    continue
                entries.append(replace(e, timestamps=e.timestamps + (stamp(e.sig),)))
                done.append(who)
            if done:
                data = replace(env, signatures=tuple(entries)).encode()
                new = NewObject(datatype=DT_SIGNATURE, data=data, linked_id=so.linked_id, name=so.name_raw.rstrip(b"\0"),
                                extra=so.extra)
                out.append((so, new, Stamped(g, so.id, 0, tuple(done), tuple(skipped))))
            elif skipped:
                out.append((so, None, Stamped(g, so.id, 0, (), tuple(skipped))))
    if not out:
        raise BadInputError(f"{img.path}: no DSSE signature to time-stamp"
                            + (f" in group(s) {', '.join(map(str, groups))}" if groups else ""))
    return out


def timestamp_image(path: str, stamp, groups: list[int] | None = None) -> list[Stamped]:
    """Add a token to every eligible signature (see module doc). RefusedError when none is."""
    with SifImage(path, writable=True) as img:
        if not any(not d.used for d in img.slots):
            raise BadInputError(f"{path}: no free descriptor slot to write the time-stamped signature into")
        work = plan(img, stamp, groups)
        if not any(new for _, new, _ in work):
            why = "; ".join(s for _, _, st in work for s in st.skipped)
            raise RefusedError(f"{path}: no signature could be time-stamped: {why}")
        done = []
        for old, new, st in work:
            if new is None:
                done.append(st)
                continue
            d = img.append(new)
            img.remove(old.id, zero=True)
            done.append(replace(st, new_object=d.id))
        return done
