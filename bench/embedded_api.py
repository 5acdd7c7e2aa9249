"""Benchmark of the embedded cloud's API latencies: prints figures, asserts nothing.

    .venv/bin/python bench/embedded_api.py [--n 15] [--json]

Starts one embedded cloud (no guests) and measures, each as the median (and max) of N:

- token issue: ``POST /v3/auth/tokens`` with the admin's password;
- token validation: ``GET /v3/auth/tokens`` with ``X-Subject-Token`` (a fresh token each time, with
  the admin's token as ``X-Auth-Token``: what keystonemiddleware does for Nova on first sight);
- first Nova call with a fresh token (``GET /v2.1/servers``: keystonemiddleware validates it), and a
  second call with the same token (validated from keystonemiddleware's cache);
- the image and network APIs' ``GET`` of their image or network lists (no Keystone in their path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import ADMIN_PROJECT, ADMIN_USER


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def issue(keystone: str, password: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": ADMIN_USER, "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": {"name": ADMIN_PROJECT, "domain": {"id": "default"}}},
        }
    }
    resp = requests.post(f"{keystone}/auth/tokens", json=body, timeout=30)
    resp.raise_for_status()
    return str(resp.headers["X-Subject-Token"])


def figures(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"median_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1)}


def run(n: int) -> dict[str, Any]:
    with EmbeddedCloud() as cloud:
        return measure_api(cloud, n)


def measure_api(cloud: EmbeddedCloud, n: int) -> dict[str, Any]:
    """The latencies above on a running cloud (bench/embedded_cloud.py reports them too)."""
    out: dict[str, Any] = {}
    layout = cloud.layout
    assert layout is not None
    password = layout.load_secrets().admin_password
    keystone, compute = layout.keystone_url, layout.compute_url
    admin = issue(keystone, password)
    issues, validations, first, second = [], [], [], []
    for _ in range(n):
        took, token = timed(lambda: issue(keystone, password))
        issues.append(took)
        headers = {"X-Auth-Token": admin, "X-Subject-Token": token}
        took, resp = timed(lambda h=headers: requests.get(f"{keystone}/auth/tokens", headers=h, timeout=30))
        resp.raise_for_status()
        validations.append(took)
        fresh = issue(keystone, password)
        for bucket in (first, second):
            took, resp = timed(
                lambda t=fresh: requests.get(f"{compute}/servers", headers={"X-Auth-Token": t}, timeout=30)
            )
            resp.raise_for_status()
            bucket.append(took)
    out["token_issue"] = figures(issues)
    out["token_validate"] = figures(validations)
    out["nova_first_call_fresh_token"] = figures(first)
    out["nova_second_call_same_token"] = figures(second)
    for name, url in (
        ("image_list", f"{layout.image_url}/v2/images"),
        ("network_list", f"{layout.network_url}/v2.0/networks"),
    ):
        samples = [
            timed(lambda u=url: requests.get(u, headers={"X-Auth-Token": admin}, timeout=30))[0]
            for _ in range(n)
        ]
        out[name] = figures(samples)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.n)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, value in result.items():
        print(f"{key:30} median {value['median_ms']:8.1f} ms   max {value['max_ms']:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
