"""The live-migrate POST waits `LIVE_MIGRATE_TIMEOUT_S` for its answer; every other call the
connection's timeout.

`RecordingAdapter` stands in for openstacksdk's compute adapter and records the keyword arguments
each request is handed: which timeout keystoneauth is asked to use is what matters here, and seeing
it on a real cloud would take a request that stays unanswered for 30 s. The request's timeout is
read by keystoneauth (a request's own ``timeout`` over its session's), not by novamig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from keystoneauth1 import exceptions as ksa_exc

from novamig.cloud.compute import LIVE_MIGRATE_TIMEOUT_S, Compute
from novamig.cloud.connection import DEFAULT_API_TIMEOUT_S
from novamig.cloud.errors import MigrationRequestLost


@dataclass
class RecordingAdapter:
    """Nova's compute adapter as `Compute` calls it: every request's method, URL and keywords."""

    lose_answers: bool = False
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @staticmethod
    def get_endpoint_data() -> SimpleNamespace:
        return SimpleNamespace(max_microversion=(2, 96))

    def request(self, url: str, method: str, **kwargs: Any) -> SimpleNamespace:
        self.sent.append((method, url, kwargs))
        if self.lose_answers:
            raise ksa_exc.ConnectTimeout("no answer")
        return SimpleNamespace(status_code=202, content=b"", headers={"x-openstack-request-id": "req-1"})


def test_the_live_migrate_post_waits_longer_than_other_calls() -> None:
    adapter = RecordingAdapter()
    api = Compute(SimpleNamespace(compute=adapter))
    assert api.live_migrate("srv", None, "auto") == "req-1"
    api.call("GET", "/os-services")
    (post_method, post_url, post), (_, _, get) = adapter.sent
    assert (post_method, post_url) == ("POST", "/servers/srv/action")
    assert post["timeout"] == LIVE_MIGRATE_TIMEOUT_S > 3 * DEFAULT_API_TIMEOUT_S
    assert "timeout" not in get  # the session's own: DEFAULT_API_TIMEOUT_S


def test_a_live_migrate_post_without_an_answer_is_sent_once() -> None:
    adapter = RecordingAdapter(lose_answers=True)
    api = Compute(SimpleNamespace(compute=adapter))
    with pytest.raises(MigrationRequestLost):
        api.live_migrate("srv", "compute2", "auto")
    assert [(m, u) for m, u, _ in adapter.sent] == [("POST", "/servers/srv/action")]
