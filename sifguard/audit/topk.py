"""Bounded heavy-hitter counting (Space-Saving, Metwally, Agrawal & El Abbadi 2005).

At most `capacity` keys are held. While no more distinct keys than that have been seen,
every count is exact (plain dict increments). Past that, a new key takes the place of a
key with the smallest count and inherits that count as its possible over-count (`error`):
any key seen more than total/capacity times is guaranteed to be held, and a reported
count c with error e means the true count lies in [c - e, c]. Memory is O(capacity)
whatever the stream.

Once full, keys are kept in buckets by count (the "stream summary"), so finding the
smallest is O(1); among equal smallest counts the key that reached that count first is
replaced (deterministic for a given input, unlike a hash-ordered choice)."""

from __future__ import annotations

import heapq
from collections import OrderedDict

KEY_CAP = 256          # characters of a key kept (paths, subjects): bounds memory per key


def clip(key: str, cap: int = KEY_CAP) -> str:
    return key if len(key) <= cap else key[:cap - 1] + "…"


class SpaceSaving:
    def __init__(self, capacity: int = 10_000):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.counts: dict[str, list[int]] = {}     # key -> [count, error]
        self._buckets: dict[int, OrderedDict] | None = None   # count -> keys (built when full)
        self._min = 0
        self.total = 0
        self.evictions = 0

    def add(self, key: str) -> None:
        key = clip(key)
        self.total += 1
        c = self.counts.get(key)
        if c is not None:
            if self._buckets is None:
                c[0] += 1
            else:
                self._bump(key, c)
            return
        if len(self.counts) < self.capacity:
            self.counts[key] = [1, 0]
            return
        if self._buckets is None:
            self._buckets = {}
            for k, (n, _) in self.counts.items():
                self._buckets.setdefault(n, OrderedDict())[k] = None
            self._min = min(self._buckets)
        low = self._buckets[self._min]
        old, _ = low.popitem(last=False)
        del self.counts[old]
        self.evictions += 1
        self.counts[key] = [self._min + 1, self._min]
        self._buckets.setdefault(self._min + 1, OrderedDict())[key] = None
        if not low:
            del self._buckets[self._min]
            self._min += 1

    def _bump(self, key: str, c: list[int]) -> None:
        n = c[0]
        b = self._buckets[n]
        del b[key]
        c[0] = n + 1
        self._buckets.setdefault(n + 1, OrderedDict())[key] = None
        if not b:
            del self._buckets[n]
            if n == self._min:
                self._min = n + 1

    @property
    def exact(self) -> bool:
        return self.evictions == 0

    def top(self, n: int) -> list[dict]:
        """The n largest, count descending then key; each {key, count, error}."""
        best = heapq.nsmallest(n, self.counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [{"key": k, "count": c, "error": e} for k, (c, e) in best]
