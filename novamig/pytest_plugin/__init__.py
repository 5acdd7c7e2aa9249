"""pytest plugin: novamig scenarios as pytest items, and fixtures for hand-written tests.

Registered through the ``pytest11`` entry point, so installing novamig is enough::

    pytest --novamig-scenario scenarios/smoke.yaml [--novamig-cloud NAME] [--novamig-out DIR] [-n 2]

Each case of a scenario (one matrix cell × one repetition) is one item, ``smoke.yaml::<case id>``
(``post_copy_after_s=5,dirty_rate_mib_s=64#r2``). An item runs its case in its set-up phase through
the runner's own `run_case`, with the cloud, fleet, host policy and probes `novamig run` uses
(`novamig.runner.commands.open_session`): there is no second runner. So an infrastructure error
(cloud unreachable, preflight, boot failure) is a pytest *error*, and the test phase only judges:
an SLA miss *fails* the item with the numbers of each missed check (value, limit, probe, reason).

Without ``--novamig-scenario`` or the ``novamig_scenarios`` ini value the plugin is inert: it
collects nothing, starts no cloud and does not even import the runner (this module is loaded by
every pytest run where novamig is installed). Its fixtures start a cloud only when a test asks.

Fixtures for hand-written tests (`fixtures`): `novamig_cloud` (an openstacksdk connection),
`novamig_server(...)` (a tagged server with the guest agent, deleted after the test) and
`novamig_migrate(server, policy=...)` (one migration, measured: a `MigrationRecord` as in
results.json), all on the session's cloud.

The cloud is opened at the first item, once per session and per xdist worker: the embedded cloud
(each worker its own) unless ``--novamig-cloud``, the scenario's ``cloud:`` or ``OS_CLOUD`` names
one (scenarios naming different clouds are a usage error: a session runs on one). On a named cloud
``-n N`` keeps every case on one worker at a time, so two workers never drain the same hosts:
the plugin's xdist scheduler (`xdist_scheduling`, which says why xdist's ``loadgroup`` cannot
under pytest 9) puts the cases of all scenario files in one scope, the cases' ``xdist_group``.
Every item's `CaseResult` travels back to the controller on its set-up report (an attribute
xdist serialises with the report), where the one ``results.json``, ``index.html`` and
``junit.xml`` of the session are written after every case, as `novamig run` does; each worker's
probe records and logs go to its own ``worker-<id>`` folder.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

OUT_HELP = "reports/pytest-<UTC time>, in the current directory"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("novamig", "novamig live-migration scenarios")
    group.addoption(
        "--novamig-scenario",
        action="append",
        default=[],
        metavar="PATH",
        help="run this novamig scenario's cases as test items (repeatable; default: none, and "
        "without scenarios here or in the novamig_scenarios ini value the plugin does nothing)",
    )
    group.addoption(
        "--novamig-cloud",
        default=None,
        metavar="NAME",
        help="the clouds.yaml cloud to run on (default: the scenarios' cloud:, else OS_CLOUD, else the "
        "embedded cloud, started once per session and per xdist worker and stopped at the end); with "
        "-n N a named cloud's cases run on one worker at a time",
    )
    group.addoption(
        "--novamig-out",
        default=None,
        metavar="DIR",
        help=f"where results.json, index.html and junit.xml of the session go (default: {OUT_HELP})",
    )
    parser.addini(
        "novamig_scenarios",
        type="paths",
        default=[],
        help="novamig scenario files run as test items, as if each was given to --novamig-scenario "
        "(default: none)",
    )


def scenario_paths(config: pytest.Config) -> list[Path]:
    """The scenarios of the session: ``--novamig-scenario`` then the ini's, each once."""
    given = [Path(p) for p in config.getoption("novamig_scenario") or []]
    ini = [Path(p) for p in config.getini("novamig_scenarios") or []]
    return list(dict.fromkeys(p.resolve() for p in [*given, *ini]))


def pytest_configure(config: pytest.Config) -> None:
    paths = scenario_paths(config)
    if not paths:
        return  # inert: nothing collected, no cloud, the runner not even imported
    from novamig.pytest_plugin import session  # noqa: PLC0415 - the runner (openstacksdk, ~1 s) only when asked for

    session.activate(config, paths)


@pytest.fixture(scope="session")
def novamig_fleet(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's cloud for the fixtures below (opened at their first use, closed after)."""
    from novamig.pytest_plugin import fixtures  # noqa: PLC0415 - the runner (openstacksdk, ~1 s) only when asked for

    fleet = fixtures.FixtureSession(request.config)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="session")
def novamig_cloud(novamig_fleet: Any) -> Iterator[Any]:
    """An openstacksdk Connection to the session's cloud: the scenarios' cloud when scenarios run,
    else ``--novamig-cloud`` (or ``OS_CLOUD``), else an embedded cloud started for the session (one
    per xdist worker) and stopped after it."""
    from novamig.pytest_plugin import fixtures  # noqa: PLC0415 - the runner (openstacksdk, ~1 s) only when asked for

    with contextlib.ExitStack() as stack:
        yield fixtures.cloud_connection(novamig_fleet, stack)


@pytest.fixture
def novamig_server(novamig_fleet: Any) -> Iterator[Callable[..., Any]]:
    """``novamig_server(image=, flavor=, network=, workload=, measure=)``: a server booted by
    novamig's fleet (tagged, the guest agent started by its user-data), deleted when the test
    ends; returns its `ServerInfo` (id, name, host, address)."""
    with contextlib.ExitStack() as stack:
        yield functools.partial(novamig_fleet.server, stack)


@pytest.fixture
def novamig_migrate(novamig_fleet: Any) -> Callable[..., Any]:
    """``novamig_migrate(server, policy={...}, target=HOST)``: one live migration of a
    `novamig_server`, measured by its probes; returns the `MigrationRecord` (the figures of a
    migration in results.json: duration, downtime per probe, phases, events)."""
    return novamig_fleet.migrate  # type: ignore[no-any-return]
