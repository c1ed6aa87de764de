"""The report as aligned text tables for a terminal (long values cut with …)."""

from __future__ import annotations

from sifguard.audit.classify import CLASSES, LABELS
from sifguard.audit.report import DECISIONS


def cut(value: str, width: int) -> str:
    value = " ".join(str(value).split())          # no newlines or tabs from a record reach the terminal
    value = "".join(ch if ch.isprintable() else "?" for ch in value)
    return value if len(value) <= width else value[:max(width - 1, 0)] + "…"


def table(title: str, header: tuple[str, ...], rows: list[tuple], width: int) -> list[str]:
    """Left-aligned first column, right-aligned numbers; the first column shrinks to fit."""
    if not rows:
        return [title, "  (none)", ""]
    cells = [tuple(str(c) for c in r) for r in rows]
    nums = [max(len(header[i]), *(len(r[i]) for r in cells)) for i in range(1, len(header))]
    room = max(12, width - 2 - sum(n + 2 for n in nums))
    first = min(room, max(len(header[0]), *(len(r[0]) for r in cells)))
    out = [title, "  " + header[0].ljust(first) + "".join("  " + h.rjust(n) for h, n in zip(header[1:], nums))]
    for r in cells:
        out.append("  " + cut(r[0], first).ljust(first) + "".join("  " + c.rjust(n) for c, n in zip(r[1:], nums)))
    return out + [""]


def _count(row: dict) -> str:
    return f"{row['count']}" + (f" (±{row['error']})" if row["error"] else "")


def _top(title: str, what: str, top: dict, width: int) -> list[str]:
    rows = [(r["key"], _count(r)) for r in top["rows"]]
    if top["rest"] and rows:
        rows.append(("(all others)", str(top["rest"])))
    return table(title, (what, "count"), rows, width)


def render(rep: dict, width: int = 100) -> str:
    out = []
    first, last = rep["range"]["first"], rep["range"]["last"]
    win = rep["window"]
    span = f"{win['since'] or 'beginning'} … {win['until'] or 'now'}"
    out.append(f"sifguard audit report — window {span}")
    out.append(f"  records from {first or '-'} to {last or '-'}")
    out.append("  sources: " + (", ".join(f"{cut(s['path'], 60)} ({s['lines']} lines)" for s in rep["sources"]) or "-"))
    ln = rep["lines"]
    skipped = {k: v for k, v in ln.items() if k not in ("records", "blank") and v}
    if skipped:
        out.append("  lines not counted: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    out.append("")
    if not rep["decisions_total"]:
        out.append("no decisions in range")
        return "\n".join(out) + "\n"
    d = rep["decisions"]
    out += table("Decisions", ("decision", "count"),
                 [(k, d[k]) for k in DECISIONS] + ([("other", d["other"])] if d["other"] else [])
                 + [("total", rep["decisions_total"])], width)
    ref, aud = rep["refusals"]["by_reason"], rep["audits"]["by_reason"]
    out += table("Refusals by reason", ("reason", "refused", "audit (would refuse)"),
                 [(LABELS[c], ref[c], aud[c]) for c in CLASSES if ref[c] or aud[c]], width)
    for key, what in (("user", "user"), ("image", "image"), ("signer", "signer (subject)"), ("rule", "rule"),
                      ("hook", "hook")):
        out += _top(f"Refusals by {key}", what, rep["refusals"][f"by_{key}"], width)
    out += _top("Top images (all decisions)", "image", rep["top_images"], width)
    days = rep["per_day"]
    out += table("Per day", ("day", *DECISIONS), [(r["day"], *(r[k] for k in DECISIONS)) for r in days], width)
    if rep["days_other"]:
        out.append(f"  ({rep['days_other']} decisions on further days not listed)")
    if rep["sources"] and not any(s["path"].startswith("journal") for s in rep["sources"]):
        out.append("Records that hooks running as the job's user logged to syslog (they cannot write the file) "
                   "are not included: add --journal.")
    if not rep["counting"]["exact"]:
        out.append(f"A count c (±e) lies between c-e and c: more than {rep['counting']['capacity']} distinct "
                   "keys were seen, so rankings are bounded estimates (space-saving counters).")
    return "\n".join(out).rstrip("\n") + "\n"
