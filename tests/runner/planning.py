"""A CasePlan with test-friendly defaults (fast intervals, two servers)."""

from __future__ import annotations

from typing import Any

from novamig.cloud.resources import FlavorSpec
from novamig.runner.plan import CasePlan
from novamig.runner.sla import SlaSpec
from novamig.runner.targets import Target
from novamig.runner.watch import Policy


def make_plan(**kw: Any) -> CasePlan:
    target = kw.pop("target", "auto")
    base: dict[str, Any] = {
        "case_id": "default#r1",
        "params": {},
        "repetition": 1,
        "servers": 2,
        "flavor": FlavorSpec(1, 256, 1),
        "image": "novamig-tiny",
        "network": None,
        "workload": "idle",
        "count": 2,
        "concurrency": 1,
        "target": Target.parse(target),
        "ping_pong": False,
        "block_migration": "auto",
        "interval_s": 0.0,
        "policy": Policy(timeout_s=30),
        "sla": SlaSpec(duration_max_s=30),
        "probes": (),
    }
    base.update(kw)
    return CasePlan(**base)
