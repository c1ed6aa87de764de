"""The audit report, pure: records (and the reader's line problems) in → one report dict out.

Memory does not grow with the number of lines: totals are plain counters over bounded
key sets (decisions, reason classes, line problems), per-key tallies (users, images,
signers, rules) are Space-Saving summaries of at most `capacity` keys each (exact while a
dimension has no more distinct keys than that; see topk.py), and per-day counts hold at
most MAX_DAYS days (later-seen days beyond that go to `days_other`)."""

from __future__ import annotations

from collections.abc import Iterable

from sifguard.audit.classify import CLASSES, LABELS, classify
from sifguard.audit.timespec import iso, record_time
from sifguard.audit.topk import SpaceSaving, clip

SCHEMA = "sifguard-audit-report/1"
DECISIONS = ("allow", "refuse", "audit", "deferred")
LINE_PROBLEMS = ("malformed", "partial", "oversized", "not-a-record", "blank", "unattested")
MAX_DAYS = 3660
DEFAULT_CAPACITY = 10_000


def _text(v, default: str) -> str:
    return v if isinstance(v, str) and v else default


def _subjects(entries, keep) -> set[str]:
    """Subjects of the signer entries a record names (a refusal for revocation names none:
    then the certificate whose revocation answer refused it)."""
    if not isinstance(entries, list):
        return set()
    return {clip(e["subject"]) for e in entries[:64]
            if isinstance(e, dict) and _text(e.get("subject"), "") and keep(e)}


class ReportBuilder:
    def __init__(self, since: float | None = None, until: float | None = None, top: int = 10,
                 capacity: int = DEFAULT_CAPACITY):
        self.since, self.until, self.top_n, self.capacity = since, until, top, capacity
        self.lines = dict.fromkeys(LINE_PROBLEMS + ("records", "out-of-window", "undated"), 0)
        self.decisions = dict.fromkeys(DECISIONS + ("other",), 0)
        self.refused_by_reason = dict.fromkeys(CLASSES, 0)
        self.audited_by_reason = dict.fromkeys(CLASSES, 0)
        self.refused = {d: SpaceSaving(capacity) for d in ("user", "image", "signer", "rule", "hook")}
        self.images = SpaceSaving(capacity)
        self.days: dict[str, dict[str, int]] = {}
        self.days_other = 0
        self.first = self.last = None

    # --- input ----------------------------------------------------------------------
    def feed(self, items: Iterable[dict | str]) -> "ReportBuilder":
        for item in items:
            if isinstance(item, dict):
                self.add(item)
            else:
                self.problem(item)
        return self

    def problem(self, kind: str) -> None:
        self.lines[kind if kind in LINE_PROBLEMS else "malformed"] += 1

    def add(self, rec: dict) -> None:
        self.lines["records"] += 1
        ts = record_time(rec.get("time"))
        if ts is None:
            if self.since is not None or self.until is not None:
                self.lines["out-of-window"] += 1     # cannot be placed in the window: left out
                return
            self.lines["undated"] += 1
        elif (self.since is not None and ts < self.since) or (self.until is not None and ts >= self.until):
            self.lines["out-of-window"] += 1
            return
        decision = rec.get("decision")
        decision = decision if decision in DECISIONS else "other"
        self.decisions[decision] += 1
        if ts is not None:
            self.first = ts if self.first is None or ts < self.first else self.first
            self.last = ts if self.last is None or ts > self.last else self.last
            raw = rec["time"]
            self._day(raw[:10] if raw.endswith("Z") and raw[10:11] == "T" else iso(ts)[:10], decision)
        image = _text(rec.get("image"), "") or _text(rec.get("operand"), "(no image)")
        self.images.add(image)
        if decision in ("refuse", "audit"):
            cls = classify(rec)
            (self.refused_by_reason if decision == "refuse" else self.audited_by_reason)[cls] += 1
        if decision == "refuse":
            ctx = rec.get("context") if isinstance(rec.get("context"), dict) else {}
            self.refused["user"].add(_text(ctx.get("user"), "(unknown)"))
            self.refused["image"].add(image)
            self.refused["rule"].add(_text(rec.get("rule"), "(no rule)"))
            self.refused["hook"].add(_text(rec.get("hook"), "(unknown)"))
            subjects = _subjects(rec.get("signers"), lambda s: True) or _subjects(
                rec.get("revocation"), lambda a: a.get("status") in ("revoked", "unknown", "error")
                and a.get("role") != "tsa")
            for s in sorted(subjects) or ["(no signer)"]:
                self.refused["signer"].add(s)

    def _day(self, day: str, decision: str) -> None:
        row = self.days.get(day)
        if row is None:
            if len(self.days) >= MAX_DAYS:
                self.days_other += 1
                return
            row = self.days[day] = dict.fromkeys(DECISIONS + ("other",), 0)
        row[decision] += 1

    # --- output ---------------------------------------------------------------------
    def _top(self, ss: SpaceSaving) -> dict:
        rows = ss.top(self.top_n)
        return {"rows": rows, "rest": ss.total - sum(r["count"] for r in rows), "distinct_at_least": len(ss.counts),
                "exact": ss.exact}

    def result(self, sources: list[dict] | None = None) -> dict:
        counted = sum(self.decisions.values())
        sums = [self.images, *self.refused.values()]
        return {
            "schema": SCHEMA,
            "sources": sources or [],
            "window": {"since": iso(self.since), "until": iso(self.until)},
            "range": {"first": iso(self.first), "last": iso(self.last)},
            "decisions_total": counted,
            "decisions": dict(self.decisions),
            "lines": dict(self.lines),
            "refusals": {"total": self.decisions["refuse"],
                         "by_reason": dict(self.refused_by_reason),
                         **{f"by_{d}": self._top(ss) for d, ss in self.refused.items()}},
            "audits": {"total": self.decisions["audit"], "by_reason": dict(self.audited_by_reason)},
            "top_images": self._top(self.images),
            "per_day": [{"day": d, **row} for d, row in sorted(self.days.items())],
            "days_other": self.days_other,
            "counting": {"method": "space-saving", "capacity": self.capacity,
                         "exact": all(ss.exact for ss in sums) and not self.days_other},
            "reason_labels": dict(LABELS),
        }


def build(items: Iterable[dict | str], since: float | None = None, until: float | None = None, top: int = 10,
          capacity: int = DEFAULT_CAPACITY, sources: list[dict] | None = None) -> dict:
    """The report for these records/line problems (the reader's output, or dicts in tests)."""
    return ReportBuilder(since, until, top, capacity).feed(items).result(sources)
