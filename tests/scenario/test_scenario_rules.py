"""Every validation rule, fed a bad file: the exact line, column and key path of each error."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from scenario_testlib import Check

from novamig.scenario.commands import cmd_validate

# (scenario text, expected "F:LINE:COL: key.path: " prefix, a fragment of the message)
CASES: list[tuple[str, str, str, str]] = [
    # --- unknown, missing and mistyped keys ----------------------------------------------------
    (
        "unknown-root",
        "name: a\nrepaet: 3\n",
        "F:2:1: repaet: ",
        "unknown key `repaet`; did you mean `repeat`?",
    ),
    (
        "unknown-nested",
        "name: a\nfleet:\n  count: 1\n  falvor: m1.small\n",
        "F:4:3: fleet.falvor: ",
        "did you mean `flavor`?",
    ),
    ("missing-name", "# header\nfleet:\n  count: 1\n", "F:2:1: name: ", "missing required key `name`"),
    (
        "missing-nested",
        "name: a\nworkload:\n  kind: script\n  script:\n    env: {A: b}\n",
        "F:5:5: workload.script.command: ",
        "missing required key `command`",
    ),
    (
        "wrong-type",
        "name: a\nmigration:\n  count: '3'\n",
        "F:3:10: migration.count: ",
        "valid integer, got '3'",
    ),
    ("bool-not-int", "name: a\nrepeat: true\n", "F:2:9: repeat: ", "valid integer, got true"),
    (
        "below-range",
        "name: a\nfleet: {count: 0}\n",
        "F:2:16: fleet.count: ",
        "greater than or equal to 1, got 0",
    ),
    (
        "heartbeat-range",
        "name: a\nmeasure:\n  heartbeat_hz: 20000\n",
        "F:3:17: measure.heartbeat_hz: ",
        "less than or equal to 10000",
    ),
    (
        "heartbeat-zero",
        "name: a\nmeasure: {heartbeat_hz: 0}\n",
        "F:2:25: measure.heartbeat_hz: ",
        "greater than",
    ),
    (
        "enum",
        "name: a\nworkload:\n  kind: memry\n",
        "F:3:9: workload.kind: ",
        "got 'memry'; did you mean `memory`?",
    ),
    ("slug", "name: Web Test\n", "F:1:7: name: ", "should be a slug"),
    ("target", "name: a\nmigration: {target: 'drain:'}\n", "F:2:21: migration.target: ", "`drain:HOST`"),
    (
        "list-item",
        "name: a\nmeasure:\n  probes: [guest, ping]\n",
        "F:3:19: measure.probes[1]: ",
        "got 'ping'",
    ),
    ("empty-probes", "name: a\nmeasure:\n  probes: []\n", "F:3:11: measure.probes: ", "at least 1 item"),
    (
        "flavor-spec",
        "name: a\nfleet:\n  flavor: {vcpus: 1, ram: 512}\n",
        "F:3:22: fleet.flavor.ram: ",
        "did you mean `ram_mb`?",
    ),
    ("flavor-name", "name: a\nfleet:\n  flavor: 'm1 small'\n", "F:3:11: fleet.flavor: ", "should be a name"),
    (
        "locustfile",
        "name: a\nworkload:\n  locust: {locustfile: web.txt}\n",
        "F:3:24: workload.locust.locustfile: ",
        "`.py` file",
    ),
    (
        "builtin-locustfile",
        "name: a\nworkload:\n  locust: {locustfile: 'builtin:shop'}\n",
        "F:3:24: workload.locust.locustfile: ",
        "unknown built-in Locust file `shop`",
    ),
    (
        "host-policy-nova-minimum",
        "name: a\nhost_policy:\n  live_migration_downtime: 50\n",
        "F:3:28: host_policy.live_migration_downtime: ",
        "greater than or equal to 100",
    ),
    (
        "host-policy-action",
        "name: a\nhost_policy:\n  live_migration_timeout_action: pause\n",
        "F:3:34: host_policy.live_migration_timeout_action: ",
        "'abort' or 'force_complete'",
    ),
    # --- YAML-level problems --------------------------------------------------------------------
    (
        "duplicate",
        "name: a\nrepeat: 1\nrepeat: 2\n",
        "F:3:1: repeat: ",
        "duplicate key `repeat` (first written at line 2",
    ),
    (
        "duplicate-nested",
        "name: a\nfleet: {count: 1, image: x, count: 2}\n",
        "F:2:29: fleet.count: ",
        "duplicate key `count`",
    ),
    ("non-string-key", "name: a\non: 1\n", "F:2:1: on: ", "not a string (YAML reads it as bool)"),
    ("syntax", "name: a\nfleet:\n  count: [1, 2\nrepeat: 1\n", "F:4:7: (yaml): ", "YAML syntax error"),
    ("tab", "name: a\nfleet:\n\tcount: 1\n", "F:3:1: (yaml): ", "YAML syntax error"),
    ("empty", "", "F:1:1: (root): ", "the file is empty"),
    ("comments-only", "# nothing\n", "F:1:1: (root): ", "the file is empty"),
    ("not-mapping", "\n- a\n- b\n", "F:1:1: (root): ", "not a list"),
    ("scalar", "just text\n", "F:1:1: (root): ", "not a single value"),
    ("null-document", "# comment\n\n~\n", "F:3:1: (root): ", "the file is empty"),
    ("two-documents", "name: a\n---\nname: b\n", "F:2:1: (yaml): ", "expected a single document"),
    # --- cross-field rules ------------------------------------------------------------------------
    (
        "abort-vs-timeout",
        "name: a\nmigration:\n  policy:\n    abort_after_s: 700\n    timeout_s: 600\n",
        "F:4:20: migration.policy.abort_after_s: ",
        "must be below `timeout_s` (600 s)",
    ),
    (
        "abort-vs-default-timeout",
        "name: a\nmigration:\n  policy: {abort_after_s: 600}\n",
        "F:3:27: migration.policy.abort_after_s: ",
        "must be below `timeout_s` (600 s)",
    ),
    (
        "post-copy-vs-timeout",
        "name: a\nmigration:\n  policy:\n    timeout_s: 60\n    post_copy_after_s: 60\n",
        "F:5:24: migration.policy.post_copy_after_s: ",
        "must be below `timeout_s` (60 s)",
    ),
    (
        "post-copy-vs-abort",
        "name: a\nmigration:\n  policy: {post_copy_after_s: 30, abort_after_s: 20}\n",
        "F:3:31: migration.policy.post_copy_after_s: ",
        "must be below `abort_after_s` (20 s)",
    ),
    (
        "drain-needs-count",
        "name: a\nmigration:\n  target: drain:compute1\n  count: 0\n",
        "F:4:10: migration.count: ",
        "needs `count` of at least 1",
    ),
    (
        "drain-count-default-zero-elsewhere",
        "name: a\nmigration:\n  count: 0\n  target: drain:compute1\n",
        "F:3:10: migration.count: ",
        "`target: drain:compute1`",
    ),
    (
        "ping-pong-drain",
        "name: a\nmigration:\n  target: drain:c1\n  ping_pong: true\n",
        "F:4:14: migration.ping_pong: ",
        "cannot be combined with `target: drain:c1`",
    ),
    (
        "ping-pong-round-robin",
        "name: a\nmigration: {target: round-robin, ping_pong: true}\n",
        "F:2:45: migration.ping_pong: ",
        "cannot be combined",
    ),
    (
        "concurrency",
        "name: a\nfleet: {count: 2}\nmigration:\n  concurrency: 3\n",
        "F:4:16: migration.concurrency: ",
        "cannot exceed `fleet.count` (2)",
    ),
    (
        "memory-needs-rate",
        "name: a\nworkload:\n  kind: memory\n  memory: {dirty_rate_mib_s: 0}\n",
        "F:4:30: workload.memory.dirty_rate_mib_s: ",
        "must be above 0 with `kind: memory`",
    ),
    (
        "memory-needs-rate-default",
        "name: a\nworkload:\n  kind: memory\n",
        "F:3:9: workload.memory.dirty_rate_mib_s: ",
        "must be above 0",
    ),
    (
        "idle-no-rate",
        "name: a\nworkload:\n  memory:\n    dirty_rate_mib_s: 10\n",
        "F:4:23: workload.memory.dirty_rate_mib_s: ",
        "must be 0 with `kind: idle`",
    ),
    (
        "script-needs-block",
        "name: a\nworkload:\n  kind: script\n",
        "F:3:9: workload.script: ",
        "is required with `kind: script`",
    ),
    (
        "working-set",
        "name: a\nfleet:\n  flavor: {ram_mb: 256}\nworkload:\n  kind: memory\n"
        "  memory: {dirty_rate_mib_s: 8, working_set_mib: 200}\n",
        "F:6:50: workload.memory.working_set_mib: ",
        "= 192 MiB",
    ),
    (
        "working-set-default-size",
        "name: a\nfleet:\n  flavor: {ram_mb: 100}\nworkload:\n  kind: memory\n"
        "  memory: {dirty_rate_mib_s: 8}\n",
        "F:3:20: workload.memory.working_set_mib: ",
        "`fleet.flavor.ram_mb` (100)",
    ),
    (
        "locust-in-tiny",
        "name: a\nworkload:\n  kind: locust\n",
        "F:3:9: workload.locust.where: ",
        "`fleet.image: novamig-full`",
    ),
    (
        "locust-probe",
        "name: a\nmeasure:\n  probes: [guest, locust]\n",
        "F:3:19: measure.probes[1]: ",
        "the `locust` probe needs `workload.kind: locust`",
    ),
    (
        "probe-twice",
        "name: a\nmeasure:\n  probes: [guest, guest]\n",
        "F:3:19: measure.probes[1]: ",
        "listed twice",
    ),
    (
        "sla-probe",
        "name: a\nmeasure:\n  probes: [guest]\nsla:\n  downtime_ms: {max: 500, probe: network}\n",
        "F:5:34: sla.downtime_ms.probe: ",
        "`network` is not among `measure.probes` (guest)",
    ),
    (
        "sla-written-guest-probe",
        "name: a\nmeasure:\n  probes: [network]\nsla:\n  downtime_ms: {probe: guest}\n",
        "F:5:24: sla.downtime_ms.probe: ",
        "`guest` is not among",
    ),
    (
        "sla-p95-above-max",
        "name: a\nsla:\n  duration_s: {max: 10, p95: 20}\n",
        "F:3:30: sla.duration_s.p95: ",
        "cannot exceed `max` (10 s)",
    ),
    (
        "sla-resolution",
        "name: a\nmeasure: {heartbeat_hz: 10}\nsla:\n  downtime_ms: {max: 50}\n",
        "F:4:22: sla.downtime_ms.max: ",
        "resolution 100 ms",
    ),
    (
        "sla-locust-ratio",
        "name: a\nsla:\n  locust_failure_ratio: {max: 0.1}\n",
        "F:3:31: sla.locust_failure_ratio.max: ",
        "needs `workload.kind: locust` (it is `idle`)",
    ),
    (
        "sla-ratio-range",
        "name: a\nsla:\n  migrations_completed_ratio: 1.5\n",
        "F:3:31: sla.migrations_completed_ratio: ",
        "less than or equal to 1",
    ),
    (
        "permit-post-copy",
        "name: a\nmigration:\n  policy: {post_copy_after_s: 5}\nhost_policy:\n"
        "  live_migration_permit_post_copy: false\n",
        "F:3:31: migration.policy.post_copy_after_s: ",
        "needs `host_policy.live_migration_permit_post_copy: true`",
    ),
    (
        "permit-auto-converge",
        "name: a\nmigration:\n  policy:\n    auto_converge: true\nhost_policy:\n"
        "  live_migration_permit_auto_converge: false\n",
        "F:4:20: migration.policy.auto_converge: ",
        "live_migration_permit_auto_converge",
    ),
    # --- matrix -----------------------------------------------------------------------------------
    (
        "matrix-unknown-key",
        "name: a\nmatrix:\n  migration.policy.postcopy_after_s: [null, 5]\n",
        "F:3:3: matrix[migration.policy.postcopy_after_s]: ",
        "did you mean `post_copy_after_s`?",
    ),
    (
        "matrix-misplaced-key",
        "name: a\nmatrix:\n  migration.timeout_s: [10]\n",
        "F:3:3: matrix[migration.timeout_s]: ",
        "did you mean `migration.policy.timeout_s`?",
    ),
    ("matrix-forbidden-key", "name: a\nmatrix:\n  repeat: [1, 2]\n", "F:3:3: matrix.repeat: ", "cannot vary"),
    (
        "matrix-value-type",
        "name: a\nmatrix:\n  migration.count: [1, two]\n",
        "F:3:24: matrix[migration.count][1]: ",
        "valid integer, got 'two'",
    ),
    (
        "matrix-value-rule",
        "name: a\nworkload: {kind: memory, memory: {dirty_rate_mib_s: 8}}\nmatrix:\n"
        "  workload.memory.dirty_rate_mib_s: [0, 64]\n",
        "F:4:38: matrix[workload.memory.dirty_rate_mib_s][0]: ",
        "must be above 0 with `kind: memory`",
    ),
    (
        "matrix-value-other-field",
        "name: a\nmigration: {concurrency: 2}\nmatrix:\n  fleet.count: [2, 1]\n",
        "F:4:20: matrix[fleet.count][1]: ",
        "migration.concurrency: cannot exceed `fleet.count` (1)",
    ),
    (
        "matrix-cell",
        "name: a\nmeasure: {probes: [guest, locust]}\nworkload: {kind: locust, locust: {where: runner}}\n"
        "matrix:\n  workload.kind: [locust, idle]\n",
        "F:5:3: matrix: ",
        "in case `kind=idle`: measure.probes[1]: the `locust` probe needs",
    ),
    (
        "matrix-duplicate",
        "name: a\nmatrix:\n  repeat_x: [1]\n  migration.count: [1, 1]\n",
        "F:4:24: ",
        "listed twice",
    ),
    (
        "matrix-empty-list",
        "name: a\nmatrix:\n  migration.count: []\n",
        "F:3:20: matrix[migration.count]: ",
        "at least 1",
    ),
    (
        "matrix-too-many",
        "name: a\nrepeat: 100\nmatrix:\n  migration.count: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n",
        "F:4:3: matrix: ",
        "expands into 1100 cases",
    ),
    (
        "matrix-through-name",
        "name: a\nfleet: {flavor: m1.small}\nmatrix:\n  fleet.flavor.ram_mb: [256]\n",
        "F:4:3: matrix[fleet.flavor.ram_mb]: ",
        "`fleet.flavor` is a single value",
    ),
]


@pytest.mark.parametrize(("text", "where", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_points_at_the_offending_node(check: Check, text: str, where: str, fragment: str) -> None:
    lines = check(text)
    hits = [line for line in lines if line.startswith(where)]
    assert hits, f"no error at {where!r}; got {lines}"
    assert any(fragment in line for line in hits), f"{fragment!r} not in {hits}"


def test_every_error_of_a_file_is_reported(check: Check) -> None:
    lines = check(
        """
        name: Bad Name
        fleet:
          cuont: 2
        migration:
          count: -1
        matrix:
          migration.nope: [1]
        """
    )
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["F:1:7", "name"],
        ["F:3:3", "fleet.cuont"],
        ["F:5:10", "migration.count"],
        ["F:7:3", "matrix[migration.nope]"],
    ]


def test_errors_are_sorted_by_position(check: Check) -> None:
    lines = check(
        "name: a\nmigration: {concurrency: 3}\nfleet: {count: 1}\nmeasure: {probes: [guest, guest]}\n"
    )
    positions = [tuple(int(n) for n in line.split(":")[1:3]) for line in lines]
    assert positions == sorted(positions) and len(positions) == 2


def test_merged_keys_point_where_they_are_written(check: Check) -> None:
    lines = check(
        """
        name: a
        x-base: &base {count: 0}
        fleet:
          <<: *base
          image: novamig-tiny
        """
    )
    # `x-base` is unknown; the merged `count: 0` is reported where the anchor writes it.
    assert lines[0].startswith("F:2:1: x-base: unknown key")
    assert lines[1].startswith("F:2:23: fleet.count: ")


def test_alias_bomb_is_refused_quickly(check: Check) -> None:
    rows = ["name: a", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines = check("\n".join(rows) + "\n")
    assert lines == ["F:1:1: (root): more than 50000 values once aliases are expanded"]


def test_secret_values_are_never_echoed(check: Check) -> None:
    lines = check(
        """
        name: a
        os_password: hunter2
        workload:
          kind: script
          script:
            command: run
            env: {API_TOKEN: 12345678, LEVEL: 3}
        """
    )
    text = "\n".join(lines)
    assert "hunter2" not in text and "12345678" not in text
    assert "F:2:1: os_password: unknown key `os_password`; credentials belong in clouds.yaml" in text
    assert "F:7:22: workload.script.env.API_TOKEN: Input should be a valid string (value not shown" in text
    assert "F:7:39: workload.script.env.LEVEL: Input should be a valid string, got 3" in text


def test_secret_in_override_is_never_echoed(check: Check) -> None:
    lines = check(
        "name: a\nworkload: {kind: script, script: {command: x}}\n", ["workload.script.env.DB_PASSWORD=42"]
    )
    assert lines == [
        "<--set>:0:0: workload.script.env.DB_PASSWORD: Input should be a valid string "
        "(value not shown: the key looks like a secret)"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: a\ndescription: caf\xe9\n")
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 2
    assert out.getvalue() == f"{path}:2:17: (yaml): not UTF-8 text\n"


def test_control_character(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: a\ndescription: x\x07y\n")
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 2
    assert out.getvalue().startswith(
        f"{path}:2:15: (yaml): YAML syntax error: character U+0007 is not allowed"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    out = io.StringIO()
    missing = tmp_path / "nope.yaml"
    assert cmd_validate([str(missing), str(tmp_path)], [], out) == 2
    assert out.getvalue().splitlines() == [
        f"{missing}:0:0: (file): no such file",
        f"{tmp_path}:0:0: (file): is a directory, not a scenario file",
    ]


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: a\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # as root, chmod 0 would not stop reading
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 2
    assert out.getvalue() == f"{path}:0:0: (file): cannot read: Permission denied\n"


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: a\n" + "#" * 1_000_001)
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 2
    assert out.getvalue() == f"{path}:0:0: (file): larger than 1000000 bytes: not a scenario file\n"


def test_matrix_conflict_names_the_key_that_goes_through_a_name(check: Check) -> None:
    lines = check(
        """
        name: a
        matrix:
          migration.count: [1]
          fleet.flavor: [m1.small]
          fleet.flavor.ram_mb: [256]
        """
    )
    assert lines == [
        "F:5:3: matrix[fleet.flavor.ram_mb]: `fleet.flavor` is a single value, not a mapping; "
        "set `fleet.flavor` as a whole instead"
    ]


def test_infinity_and_nan_are_refused(check: Check) -> None:
    lines = check("name: a\nsla:\n  downtime_ms: {max: .inf}\n  duration_s: {max: .nan}\n")
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["F:3:22", "sla.downtime_ms.max"],
        ["F:4:21", "sla.duration_s.max"],
    ]
    assert "finite number" in lines[0]
