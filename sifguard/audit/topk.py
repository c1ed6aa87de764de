"""Bounded heavy-hitter counting (Space-Saving, Metwally, Agrawal & El Abbadi 2005).

At most `capacity` keys are held. While no more distinct keys than that have been seen,
every count is exact. Past that, a new key takes the place of the key with the smallest
count and inherits that count as its possible over-count (`error`): any key seen more
than total/capacity times is guaranteed to be held, and a reported count c with error e
means the true count lies in [c - e, c]. Memory is O(capacity) whatever the stream."""

from __future__ import annotations

import heapq

KEY_CAP = 256          # characters of a key kept (paths, subjects): bounds memory per key


def clip(key: str, cap: int = KEY_CAP) -> str:
    return key if len(key) <= cap else key[:cap - 1] + "…"


class SpaceSaving:
    def __init__(self, capacity: int = 10_000):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.counts: dict[str, list[int]] = {}     # key -> [count, error]
        self._heap: list[tuple[int, str]] = []     # (count when pushed, key): a lower bound per held key
        self.total = 0
        self.evictions = 0

    def add(self, key: str, n: int = 1) -> None:
        key = clip(key)
        self.total += n
        c = self.counts.get(key)
        if c is not None:
            c[0] += n
            return
        if len(self.counts) < self.capacity:
            self.counts[key] = [n, 0]
            heapq.heappush(self._heap, (n, key))
            return
        # evict the smallest: heap entries are lower bounds (counts only grow); a stale top
        # is refreshed and pushed back, so the first top whose count is current is the minimum
        while True:
            pushed, old = self._heap[0]
            cur = self.counts[old][0]
            if cur == pushed:
                break
            heapq.heapreplace(self._heap, (cur, old))
        heapq.heappop(self._heap)
        del self.counts[old]
        self.evictions += 1
        self.counts[key] = [pushed + n, pushed]
        heapq.heappush(self._heap, (pushed + n, key))

    @property
    def exact(self) -> bool:
        return self.evictions == 0

    def top(self, n: int) -> list[dict]:
        """The n largest, count descending then key; each {key, count, error}."""
        best = heapq.nsmallest(n, self.counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [{"key": k, "count": c, "error": e} for k, (c, e) in best]
