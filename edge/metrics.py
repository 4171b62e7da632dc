"""Prometheus text-format metrics without a client library (one less wheel on a Pi).

Request counts by route and status, a latency histogram per route, rejections by reason,
items scored by task and the number of requests in flight.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREFIX = "fedgrpo_edge"


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters; :meth:`render` gives the ``/metrics`` body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.rejections: dict[str, int] = defaultdict(int)
        self.items: dict[str, int] = defaultdict(int)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.in_flight = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, str(status))] += 1
            counts = self.latency_counts.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            index = next(
                (i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS)
            )
            counts[index] += 1
            self.latency_sum[route] += seconds

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejections[reason] += 1

    def scored(self, task: str, count: int) -> None:
        with self._lock:
            self.items[task] += count

    def render(self) -> str:
        with self._lock:
            lines = [
                f"# HELP {PREFIX}_requests_total HTTP requests by route and status.",
                f"# TYPE {PREFIX}_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f"{PREFIX}_requests_total{_labels(route=route, status=status)} {n}")
            lines += [
                f"# HELP {PREFIX}_request_duration_seconds Request latency by route.",
                f"# TYPE {PREFIX}_request_duration_seconds histogram",
            ]
            for route, counts in sorted(self.latency_counts.items()):
                cumulative = 0
                for bound, n in zip((*LATENCY_BUCKETS, float("inf")), counts):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(
                        f"{PREFIX}_request_duration_seconds_bucket{_labels(route=route, le=le)} {cumulative}"
                    )
                lines.append(
                    f"{PREFIX}_request_duration_seconds_sum{_labels(route=route)} {self.latency_sum[route]:.6f}"
                )
                lines.append(
                    f"{PREFIX}_request_duration_seconds_count{_labels(route=route)} {cumulative}"
                )
            lines += [
                f"# HELP {PREFIX}_rejections_total Requests refused by reason.",
                f"# TYPE {PREFIX}_rejections_total counter",
            ]
            for reason, n in sorted(self.rejections.items()):
                lines.append(f"{PREFIX}_rejections_total{_labels(reason=reason)} {n}")
            lines += [
                f"# HELP {PREFIX}_items_scored_total Candidates or exemplars scored.",
                f"# TYPE {PREFIX}_items_scored_total counter",
            ]
            for task, n in sorted(self.items.items()):
                lines.append(f"{PREFIX}_items_scored_total{_labels(task=task)} {n}")
            lines += [
                f"# HELP {PREFIX}_in_flight Requests admitted and not yet finished.",
                f"# TYPE {PREFIX}_in_flight gauge",
                f"{PREFIX}_in_flight {self.in_flight}",
            ]
        return "\n".join(lines) + "\n"
