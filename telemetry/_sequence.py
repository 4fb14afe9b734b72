"""Per-device sequence accounting for one subscriber: O(1) amortised, bounded memory.

A :class:`Stream` remembers the first seq it saw, the highest seq seen and the
open gaps below it as ``[lo, hi, first_seen_ns]`` ranges, sorted by ``lo``. The
common case (the next seq) touches two integers; a gap costs one list entry
until it is filled or evicted (more than ``MAX_GAPS`` open gaps on one device:
the oldest is given up as lost and forgotten, so a message of it arriving later
counts as a duplicate).

A :class:`SnapshotStream` is the snapshot-mode counterpart: values are conflated
by design, so it records the newest seq and how it moved, never loss.
"""

from __future__ import annotations

from bisect import bisect_right

from telemetry._wire import SnapshotWire, StreamWire

__all__ = ["MAX_GAPS", "Stream", "SnapshotStream", "ORDERED", "DUPLICATE", "REORDERED", "LATE"]

MAX_GAPS = 256

# outcomes of Stream.add
ORDERED = 0  # a new seq above everything seen (possibly opening a gap)
DUPLICATE = 1  # already received
REORDERED = 2  # filled a gap within the grace window
LATE = 3  # filled a gap older than the grace window (it had been counted lost)


class Stream:
    """Sequence state of one (subscriber, device) in stream mode."""

    __slots__ = ("src", "first", "hi", "gaps", "evicted", "delivered", "max_total_us")

    def __init__(self, src: str, seq: int) -> None:
        self.src = src
        self.first = seq
        self.hi = seq
        self.gaps: list[list[int]] | None = None
        self.evicted = 0
        self.delivered = 1
        self.max_total_us = 0

    @property
    def contiguous(self) -> int:
        """Highest seq such that every seq from ``first`` up to it has arrived."""
        gaps = self.gaps
        return gaps[0][0] - 1 if gaps else self.hi

    def add(self, seq: int, now_ns: int, grace_ns: int) -> int:
        hi = self.hi
        if seq == hi + 1:
            self.hi = seq
            self.delivered += 1
            return ORDERED
        if seq > hi:
            gap = [hi + 1, seq - 1, now_ns]
            if self.gaps is None:
                self.gaps = [gap]
            else:
                self.gaps.append(gap)
                if len(self.gaps) > MAX_GAPS:
                    lo, ghi, _ = self.gaps.pop(0)
                    self.evicted += ghi - lo + 1
            self.hi = seq
            self.delivered += 1
            return ORDERED
        if seq < self.first:
            # Arrived before the first one we saw: move the join point back.
            if seq + 1 <= self.first - 1:
                gap = [seq + 1, self.first - 1, now_ns]
                self.gaps = [gap, *(self.gaps or ())]
            self.first = seq
            self.delivered += 1
            return REORDERED
        gaps = self.gaps
        if not gaps:
            return DUPLICATE
        i = bisect_right(gaps, [seq, 1 << 62, 1 << 62]) - 1
        if i < 0:
            return DUPLICATE
        gap = gaps[i]
        lo, ghi, seen = gap
        if seq > ghi:
            return DUPLICATE
        if lo == ghi:
            del gaps[i]
            if not gaps:
                self.gaps = None
        elif seq == lo:
            gap[0] = lo + 1
        elif seq == ghi:
            gap[1] = ghi - 1
        else:
            gap[1] = seq - 1
            gaps.insert(i + 1, [seq + 1, ghi, seen])
        self.delivered += 1
        return LATE if now_ns - seen > grace_ns else REORDERED

    def overdue(self, now_ns: int, grace_ns: int) -> int:
        """Seqs missing for longer than the grace window (plus evicted ones)."""
        n = self.evicted
        if self.gaps:
            limit = now_ns - grace_ns
            for lo, hi, seen in self.gaps:
                if seen < limit:
                    n += hi - lo + 1
        return n

    def missing(self) -> int:
        """Every seq still missing between ``first`` and ``hi`` (evicted included)."""
        n = self.evicted
        if self.gaps:
            for lo, hi, _ in self.gaps:
                n += hi - lo + 1
        return n

    def to_wire(self) -> StreamWire:
        gaps = [[lo, hi] for lo, hi, _ in self.gaps] if self.gaps else []
        return StreamWire(
            self.src, self.first, self.hi, self.delivered, self.evicted, self.max_total_us, gaps
        )


class SnapshotStream:
    """Newest-value state of one (subscriber, device) in snapshot mode."""

    __slots__ = ("src", "seq", "updates", "repeats", "conflated", "regressions", "max_stale_us")

    def __init__(self, src: str, seq: int) -> None:
        self.src = src
        self.seq = seq
        self.updates = 1
        self.repeats = 0
        self.conflated = 0
        self.regressions = 0
        self.max_stale_us = 0

    def add(self, seq: int) -> bool:
        """Return True when ``seq`` is a new value (the newest so far)."""
        cur = self.seq
        if seq > cur:
            self.conflated += seq - cur - 1
            self.updates += 1
            self.seq = seq
            return True
        if seq == cur:
            self.repeats += 1
        else:
            self.regressions += 1
        return False

    def to_wire(self) -> SnapshotWire:
        return SnapshotWire(
            self.src,
            self.seq,
            self.updates,
            self.repeats,
            self.conflated,
            self.regressions,
            self.max_stale_us,
        )
