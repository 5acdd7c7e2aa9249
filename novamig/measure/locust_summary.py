"""The case's Locust statistics (results.json ``locust``): totals, latency percentiles, requests
per second, and Locust's own per-request-name figures.

Typed inside, plain JSON out (``dataclasses.asdict``): the keys are results.json's. Latency
percentiles are `novamig.stats`' nearest rank — every latency shown is one a request really had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from novamig.measure.locust_figure import Req
from novamig.stats import percentile, summarize


@dataclass
class RequestRateSeries:
    """Requests and failures completed per `step_s` second, from `t0_s` (case seconds)."""

    t0_s: float
    step_s: float
    requests: list[int]
    failures: list[int]


@dataclass
class RequestSummary:
    """All requests of one server, or of the case: the ``total`` and each ``servers`` entry."""

    requests: int
    failures: int
    failure_ratio: float | None
    latency_ms: dict[str, float | None]  # p50, p90, p95, p99, max, mean of successful requests
    rps: RequestRateSeries | None
    locust_reported: dict[str, Any] | None = None  # Locust's own statistics: totals, by_name
    by_name: dict[str, dict[str, Any]] | None = None  # per request name, from novamig's own records


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def latency_figures(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p95, p99, max and mean (ms, rounded to µs); all None with no latency."""
    s = summarize(latencies_ms)
    if s is None:
        return dict.fromkeys(("p50", "p90", "p95", "p99", "max", "mean"))
    return {
        "p50": round(s.p50, 3),
        "p90": _round(percentile(latencies_ms, 90)),
        "p95": round(s.p95, 3),
        "p99": round(s.p99, 3),
        "max": round(s.max, 3),
        "mean": round(s.mean, 3),
    }


def request_rate(reqs: Sequence[Req]) -> RequestRateSeries | None:
    """Completions per whole case second; None without a request."""
    if not reqs:
        return None
    t0 = math.floor(min(r.t_s for r in reqs))
    n = int(math.floor(max(r.t_s for r in reqs)) - t0) + 1
    counts, fails = [0] * n, [0] * n
    for r in reqs:
        i = int(math.floor(r.t_s) - t0)
        counts[i] += 1
        fails[i] += 0 if r.ok else 1
    return RequestRateSeries(float(t0), 1.0, counts, fails)


def summarize_requests(reqs: Sequence[Req], reported: list[dict[str, Any]] | None = None) -> RequestSummary:
    """The summary of `reqs`, with Locust's own statistics (its ``--json-file`` entries) when given."""
    failures = sum(1 for r in reqs if not r.ok)
    own = None
    if reported is not None:
        own = {
            "requests": sum(int(x.get("num_requests", 0)) for x in reported),
            "failures": sum(int(x.get("num_failures", 0)) for x in reported),
            "by_name": by_name(reported),
        }
    return RequestSummary(
        by_name=names_from_records(reqs) if any(r.name for r in reqs) else None,
        requests=len(reqs),
        failures=failures,
        failure_ratio=round(failures / len(reqs), 6) if reqs else None,
        latency_ms=latency_figures([r.latency_ms for r in reqs if r.ok]),
        rps=request_rate(reqs),
        locust_reported=own,
    )


def by_name(reported: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Locust's per-request-name statistics (its ``--json-file`` entries), merged over servers:
    what the locustfile's own endpoints saw, beside novamig's per-request records."""
    out: dict[str, dict[str, Any]] = {}
    for x in reported:
        key = f"{x.get('method') or ''} {x.get('name') or ''}".strip()
        e = out.setdefault(key, {"requests": 0, "failures": 0, "total_ms": 0.0, "max_ms": 0.0})
        e["requests"] += int(x.get("num_requests", 0))
        e["failures"] += int(x.get("num_failures", 0))
        e["total_ms"] += float(x.get("total_response_time", 0.0) or 0.0)
        e["max_ms"] = max(e["max_ms"], float(x.get("max_response_time", 0.0) or 0.0))
    for e in out.values():
        total = e.pop("total_ms")
        e["mean_ms"] = round(total / e["requests"], 3) if e["requests"] else None
        e["max_ms"] = round(e["max_ms"], 3)
    return dict(sorted(out.items()))


def names_from_records(reqs: Sequence[Req]) -> dict[str, dict[str, Any]]:
    """Per request name (``"GET /api/items"``): requests, failures and the latency percentiles of
    the successful ones, from novamig's per-request records. Locust's own per-name statistics
    (`by_name`) give only a mean and a maximum; a mean hides the tail a migration puts on one
    endpoint, and these are nearest-rank like every other percentile in results.json."""
    grouped: dict[str, list[Req]] = {}
    for r in reqs:
        grouped.setdefault(r.name or "(unnamed)", []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(grouped):
        group = grouped[name]
        ok = [r.latency_ms for r in group if r.ok]
        out[name] = {
            "requests": len(group),
            "failures": len(group) - len(ok),
            **{f"{k}_ms": v for k, v in latency_figures(ok).items() if k in ("p50", "p95", "p99", "max")},
        }
    return out
