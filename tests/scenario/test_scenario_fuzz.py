"""Property-based: mutated shipped scenarios give positioned errors and exit 2, never an exception.

Each example starts from a valid shipped scenario and breaks it one way: a deleted key, a value of
the wrong type, a number out of range, garbage bytes in the YAML, or a random `--set`. Mutations that
must make the file invalid are asserted to exit 2 and to report the mutated key; the others may
happen to stay valid, but must still answer in the `FILE:LINE:COL: key.path: message` format.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario_testlib import SHIPPED

from novamig.scenario.commands import cmd_validate
from novamig.scenario.issues import KeyPath, format_key_path

LINE = re.compile(r"^(?P<file>F|<--set>):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<message>.+)$")
ORIGINALS: dict[str, Any] = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in SHIPPED}
TEXTS: dict[str, bytes] = {p.name: p.read_bytes() for p in SHIPPED}
#: Examples per property; raise it (e.g. NOVAMIG_FUZZ_EXAMPLES=5000) for a longer hunt.
EXAMPLES = int(os.environ.get("NOVAMIG_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def leaves(data: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Paths to every scalar value (mapping values and list items)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in leaves(v, (*prefix, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in leaves(v, (*prefix, i))]
    return [prefix]


def keys(data: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Paths to every mapping entry."""
    out: list[KeyPath] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append((*prefix, k))
            out.extend(keys(v, (*prefix, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(keys(v, (*prefix, i)))
    return out


def get(data: Any, path: KeyPath) -> Any:
    for item in path:
        data = data[item]
    return data


def put(data: Any, path: KeyPath, value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def run(tmp: Path, content: bytes, overrides: list[str] | None = None) -> tuple[int, list[str]]:
    path = tmp / "scenario.yaml"
    path.write_bytes(content)
    out = io.StringIO()
    status = cmd_validate([str(path)], overrides or [], out)  # an exception here fails the test
    lines = [line.replace(str(path), "F", 1) for line in out.getvalue().splitlines()]
    assert status in (0, 2)
    assert lines, "nothing printed"
    if status == 0:  # a valid file: ok, then any warnings
        assert lines[0] == "F: ok" and all(line.startswith("F: warning: ") for line in lines[1:]), lines
    else:
        for line in lines:
            match = LINE.match(line)
            assert match, f"not FILE:LINE:COL: key.path: message: {line!r}"
            assert match["path"] != "(internal)", line
            if match["file"] == "F" and match["path"] not in ("(file)",):
                assert int(match["line"]) >= 1 and int(match["col"]) >= 1, line
    return status, lines


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


scenario_names = st.sampled_from(sorted(ORIGINALS))


@FUZZ
@given(name=scenario_names, data=st.data())
def test_wrong_type_is_reported_at_its_key(tmp_path: Path, name: str, data: st.DataObject) -> None:
    scenario = yaml.safe_load(dump(ORIGINALS[name]))
    path = data.draw(st.sampled_from(leaves(scenario)), label="path")
    put(scenario, path, {"zz_not_a_field": [1]})
    status, lines = run(tmp_path, dump(scenario))
    assert status == 2
    where = format_key_path(path)
    assert any(LINE.match(line)["path"].startswith(where) for line in lines), (where, lines)  # type: ignore[index]


@FUZZ
@given(name=scenario_names, data=st.data(), magnitude=st.integers(min_value=1, max_value=10**9))
def test_out_of_range_number_is_reported_at_its_key(
    tmp_path: Path, name: str, data: st.DataObject, magnitude: int
) -> None:
    scenario = yaml.safe_load(dump(ORIGINALS[name]))
    numbers = [
        p
        for p in leaves(scenario)
        if isinstance(get(scenario, p), int | float) and not isinstance(get(scenario, p), bool)
    ]
    path = data.draw(st.sampled_from(numbers), label="path")
    put(scenario, path, -magnitude)
    status, lines = run(tmp_path, dump(scenario))
    assert status == 2
    where = format_key_path(path)
    assert any(LINE.match(line)["path"] == where for line in lines), (where, lines)  # type: ignore[index]


@FUZZ
@given(
    name=scenario_names,
    data=st.data(),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
    ),
)
def test_deleted_or_replaced_values_never_raise(
    tmp_path: Path, name: str, data: st.DataObject, value: Any
) -> None:
    scenario = yaml.safe_load(dump(ORIGINALS[name]))
    path = data.draw(st.sampled_from(keys(scenario)), label="path")
    delete = data.draw(st.booleans(), label="delete")
    if delete:
        del get(scenario, path[:-1])[path[-1]]
    else:
        put(scenario, path, value)
    status, _ = run(tmp_path, dump(scenario))
    if delete and path == ("name",):
        assert status == 2


@FUZZ
@given(name=scenario_names, data=st.data(), garbage=st.binary(min_size=1, max_size=24))
def test_garbage_bytes_never_raise(tmp_path: Path, name: str, data: st.DataObject, garbage: bytes) -> None:
    text = TEXTS[name]
    at = data.draw(st.integers(min_value=0, max_value=len(text)), label="offset")
    cut = data.draw(st.integers(min_value=0, max_value=8), label="cut")
    run(tmp_path, text[:at] + garbage + text[at + cut :])


@settings(
    max_examples=max(1, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=scenario_names, overrides=st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_random_overrides_never_raise(tmp_path: Path, name: str, overrides: list[str]) -> None:
    run(tmp_path, TEXTS[name], overrides)


@settings(
    max_examples=max(1, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=scenario_names,
    key=st.sampled_from(
        ["migration.count", "fleet.count", "measure.heartbeat_hz", "repeat", "migration.policy.timeout_s"]
    ),
    value=st.one_of(st.integers(min_value=-5, max_value=20_000), st.text(max_size=6), st.none()),
)
def test_typed_overrides_never_raise(tmp_path: Path, name: str, key: str, value: object) -> None:
    rendered = "null" if value is None else str(value)
    run(tmp_path, TEXTS[name], [f"{key}={rendered}"])


# --- whole files of junk: structure, bytes, bombs --------------------------------------------------

#: Scalars YAML can carry, chosen to hit type and range checks: huge and tiny numbers, unicode.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(
        alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
        max_size=10,
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=40,
)
SECTIONS = st.sampled_from(
    [
        "name",
        "fleet",
        "workload",
        "migration",
        "measure",
        "sla",
        "matrix",
        "repeat",
        "host_policy",
        "x-unknown",
    ]
)


def shipped_with(name: str, section: str, tree: Any) -> bytes:
    """A shipped scenario with one top-level section replaced by an arbitrary tree."""
    scenario = yaml.safe_load(dump(ORIGINALS[name]))
    scenario[section] = tree
    return dump(scenario)


def junk_documents() -> st.SearchStrategy[bytes]:
    """Whole scenario files: arbitrary trees alone or spliced into a shipped scenario, raw bytes."""
    return st.one_of(
        TREES.map(dump),
        st.builds(shipped_with, scenario_names, SECTIONS, TREES),
        st.binary(max_size=400),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    )


def nested(depth: int, flow: bool) -> bytes:
    """`depth` levels of lists under a valid key, in flow or block style."""
    if flow:
        return b"name: a\ndescription: " + b"[" * depth + b"]" * depth + b"\n"
    return b"name: a\nmatrix:\n" + b"".join(b"  " * (i + 1) + b"- \n" for i in range(depth))


def laughs(levels: int, width: int = 10) -> bytes:
    """The billion-laughs alias bomb, under a key that is valid so the parser gets that far."""
    lines = ["name: a", "matrix:", "  migration.count:", "    - &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


@FUZZ
@given(content=junk_documents())
def test_junk_documents_never_raise(tmp_path: Path, content: bytes) -> None:
    run(tmp_path, content)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n# only a comment\n", "the file is empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"- a\n- b\n", "not a list"),
        (b"name: a\nname: b\n", "duplicate"),
        (nested(5_000, flow=True), "nesting deeper than"),
        (nested(400, flow=False), ""),
        (laughs(9), "once aliases are expanded"),
        (b"name: a\nbase: &b {x: 1}\nfleet:\n  <<: *b\n", "x"),
        (b"name: a\nrepeat: 1" + b"0" * 400 + b"\n", "repeat"),
    ],
)
def test_pathological_files_answer_quickly_and_small(tmp_path: Path, content: bytes, message: str) -> None:
    """Bombs and deep nesting are refused in bounded time and memory, with a positioned error.

    Time is measured without tracemalloc (it slows parsing several times over), memory on a
    second pass with it.
    """
    started = time.monotonic()
    status, lines = run(tmp_path, content)
    assert time.monotonic() - started < 10
    tracemalloc.start()
    try:
        run(tmp_path, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 2, lines
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert any(message in line for line in lines), lines


def test_a_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cmd_validate([str(tmp_path)], [], out) == 2
    assert out.getvalue().splitlines() == [f"{tmp_path}:0:0: (file): is a directory, not a scenario file"]


def test_cli_answers_junk_without_a_traceback(tmp_path: Path) -> None:
    """Through the real command: exit 2, one positioned line per problem, nothing on stderr."""
    cases = {"bomb.yaml": laughs(9), "deep.yaml": nested(5_000, flow=True), "bin.yaml": bytes(range(256))}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    novamig = str(Path(sys.executable).parent / "novamig")
    argv = [novamig, "validate", *(str(tmp_path / n) for n in cases), str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == len(cases) + 1, proc.stdout


CORPUS_EXAMPLES = int(os.environ.get("NOVAMIG_FUZZ_CORPUS", "1000"))


@pytest.mark.slow
@settings(
    max_examples=CORPUS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=junk_documents())
def test_corpus_of_generated_files(tmp_path: Path, content: bytes) -> None:
    """The long hunt: a thousand generated files, each answered with exit 0/2 and positioned lines."""
    run(tmp_path, content)
