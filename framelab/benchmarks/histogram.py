"""An HDR-style latency histogram: fixed memory, bounded relative error.

Recording a value is a few integer operations (no list of samples grows
with the run), percentiles are read from bucket counts, and two histograms
merge by adding counts, so each connection can keep its own and the load
generator sums them. Buckets are log-linear like HdrHistogram's: values
are grouped by their power of two, and each power of two is split into
SUB_BUCKETS linear steps, so a reported value is within 1/SUB_BUCKETS
(about 1.6 %) of the true one, from 1 ns to hours.
"""

from __future__ import annotations

from typing import Any

SUB_BITS = 6
SUB_BUCKETS = 1 << SUB_BITS  # linear steps per power of two
MAX_EXPONENT = 44  # values past about 2**51 ns (26 days) are clamped
BUCKETS = (MAX_EXPONENT + 2) * SUB_BUCKETS


class LatencyHistogram:
    """Counts of nanosecond values in log-linear buckets."""

    __slots__ = ("counts", "max_ns", "min_ns", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.min_ns = 0
        self.max_ns = 0

    @staticmethod
    def bucket_of(value_ns: int) -> int:
        if value_ns < 2 * SUB_BUCKETS:
            return max(value_ns, 0)
        shift = value_ns.bit_length() - SUB_BITS - 1  # keeps the top SUB_BITS + 1 bits
        if shift > MAX_EXPONENT:
            return BUCKETS - 1
        return (shift + 1) * SUB_BUCKETS + ((value_ns >> shift) - SUB_BUCKETS)

    @staticmethod
    def bucket_value(index: int) -> int:
        """The largest value a bucket holds (what a percentile reports)."""
        group, step = divmod(index, SUB_BUCKETS)
        if group == 0:
            return step
        return ((SUB_BUCKETS + step + 1) << (group - 1)) - 1

    def record(self, value_ns: int) -> None:
        self.counts[self.bucket_of(value_ns)] += 1
        if self.total == 0 or value_ns < self.min_ns:
            self.min_ns = value_ns
        self.max_ns = max(self.max_ns, value_ns)
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        if other.total == 0:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.min_ns = other.min_ns if self.total == 0 else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.total += other.total

    def percentile(self, percent: float) -> int:
        """The value at or below which `percent` % of the recorded values lie."""
        if self.total == 0:
            return 0
        rank = max(1, -(-self.total * percent // 100))  # ceil, at least the first value
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(self.bucket_value(index), self.max_ns)
        return self.max_ns

    def summary(self, percents: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, Any]:
        """Percentiles in microseconds, for reports and JSON."""
        out: dict[str, Any] = {"count": self.total}
        for p in percents:
            out[f"p{p:g}_us"] = round(self.percentile(p) / 1000, 2)
        out["max_us"] = round(self.max_ns / 1000, 2)
        return out

    def to_sparse(self) -> dict[int, int]:
        """Non-empty buckets only (to send one across a pipe)."""
        return {i: c for i, c in enumerate(self.counts) if c}

    @classmethod
    def from_sparse(cls, sparse: dict[int, int], min_ns: int, max_ns: int) -> LatencyHistogram:
        hist = cls()
        for index, count in sparse.items():
            hist.counts[int(index)] = count
        hist.total = sum(sparse.values())
        hist.min_ns, hist.max_ns = min_ns, max_ns
        return hist
