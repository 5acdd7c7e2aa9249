"""Reading a scenario file into plain data plus the position of every key and value.

PyYAML's `safe_load` forgets where things were and silently keeps the last of two duplicate keys. We
compose the node graph ourselves instead: it gives each key and value its line and column (so an
error can point at the offending node, never at line 1 by default), lets us reject duplicate and
non-string keys, and lets us refuse alias bombs before anything expands them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from novamig.scenario.issues import (
    FILE_PATH,
    ROOT_PATH,
    YAML_PATH,
    Issue,
    KeyPath,
    ScenarioInvalid,
    format_key_path,
)

#: Larger scenario files are certainly a mistake (a wrong path, a binary).
MAX_FILE_BYTES = 1_000_000
#: Nodes visited with aliases expanded; beyond this the document is an alias bomb, not a scenario.
MAX_EXPANDED_NODES = 50_000
#: Open flow brackets (`[`, `{`) allowed at once. PyYAML's scanner slows down faster than linearly
#: with flow depth (a 1 MB file of `[` would take minutes), so deeper text is refused before it is
#: parsed; no scenario comes near this.
MAX_FLOW_DEPTH = 200

_EMPTY = "the file is empty; a scenario is a mapping with at least `name`"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Pos:
    """1-based line and column of a node's first character."""

    line: int
    col: int


@dataclass(frozen=True)
class NodePos:
    """Where a mapping entry's key and its value start (for a list item both are the item)."""

    key: Pos
    value: Pos


@dataclass(frozen=True)
class Source:
    """A parsed scenario file: the data and, for each key path, where it is written."""

    file: str
    data: dict[str, Any]
    positions: dict[KeyPath, NodePos]


def _pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


def _index_to_pos(text: str, index: int) -> Pos:
    """Line and column of a character offset, for errors that carry an offset instead of a mark."""
    before = text[:index]
    line = before.count("\n") + 1
    return Pos(line, index - (before.rfind("\n") + 1) + 1)


def _fail(file: str, pos: Pos, path: str, message: str) -> ScenarioInvalid:
    return ScenarioInvalid([Issue(file, pos.line, pos.col, path, message)])


def read_text(file: str) -> str:
    """The file's text as UTF-8, or `ScenarioInvalid` saying plainly why it cannot be read."""
    path = Path(file)
    try:
        if path.is_dir():
            raise _fail(file, Pos(0, 0), FILE_PATH, "is a directory, not a scenario file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _fail(file, Pos(0, 0), FILE_PATH, "no such file") from None
    except OSError as exc:
        raise _fail(file, Pos(0, 0), FILE_PATH, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _fail(file, Pos(0, 0), FILE_PATH, f"larger than {MAX_FILE_BYTES} bytes: not a scenario file")
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8", errors="replace")
        raise _fail(file, _index_to_pos(good, len(good)), YAML_PATH, "not UTF-8 text") from None


def _code(character: object) -> int:
    return character if isinstance(character, int) else ord(str(character)[:1] or "\0")


def _yaml_error(file: str, text: str, exc: yaml.YAMLError) -> ScenarioInvalid:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark is not None else Pos(0, 0)
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        return _fail(file, pos, YAML_PATH, f"YAML syntax error: {what or 'invalid YAML'}")
    if isinstance(exc, yaml.reader.ReaderError):
        return _fail(
            file,
            _index_to_pos(text, exc.position),
            YAML_PATH,
            f"YAML syntax error: character U+{_code(exc.character):04X} is not allowed in YAML",
        )
    return _fail(file, Pos(0, 0), YAML_PATH, f"YAML error: {exc}")


def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else f"<{type(node).__name__}>"


def _walk(node: Node, path: KeyPath, budget: list[int]) -> Iterator[tuple[KeyPath, Node, Node]]:
    """Every (path, key node, value node) below `node`, counting nodes against the alias budget."""
    budget[0] -= 1
    if budget[0] < 0:
        return
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                continue
            child = (*path, _key_text(key))
            yield child, key, value
            yield from _walk(value, child, budget)
    elif isinstance(node, SequenceNode):
        for index, value in enumerate(node.value):
            child = (*path, index)
            yield child, value, value
            yield from _walk(value, child, budget)


def _check_keys(file: str, root: Node) -> list[Issue]:
    """Duplicate and non-string mapping keys: YAML allows both, a scenario allows neither."""
    issues: list[Issue] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, Node] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    stack.append((value, path))
                    continue
                text = _key_text(key)
                child = (*path, text)
                pos = _pos(key)
                if not (isinstance(key, ScalarNode) and key.tag == _STR_TAG):
                    issues.append(
                        Issue(
                            file,
                            pos.line,
                            pos.col,
                            format_key_path(child),
                            f"key `{text}` is not a string (YAML reads it as {key.tag.rsplit(':', 1)[-1]}); "
                            "quote it",
                        )
                    )
                elif text in first:
                    prev = _pos(first[text])
                    issues.append(
                        Issue(
                            file,
                            pos.line,
                            pos.col,
                            format_key_path(child),
                            f"duplicate key `{text}` (first written at line {prev.line}, column {prev.col})",
                        )
                    )
                else:
                    first[text] = key
                stack.append((value, child))
        elif isinstance(node, SequenceNode):
            stack.extend((value, (*path, i)) for i, value in enumerate(node.value))
    return sorted(issues)


def _refuse_deep(file: str, text: str) -> None:
    """Raise `ScenarioInvalid` at the bracket that opens more than `MAX_FLOW_DEPTH` flow levels.

    A raw count: brackets inside quotes or comments count too. It can only over-count, and a real
    scenario stays far below the limit either way, so it never refuses one while it bounds the time
    a pathological file takes.
    """
    depth = 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                message = f"nesting deeper than {MAX_FLOW_DEPTH} levels"
                raise _fail(file, _index_to_pos(text, index), YAML_PATH, message)
        elif char in "]}" and depth:
            depth -= 1


def parse(file: str, text: str) -> Source:
    """Parse scenario text into data and positions, or raise `ScenarioInvalid` with positions."""
    _refuse_deep(file, text)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader rejects control characters up front
        raise _yaml_error(file, text, exc) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(file, text, exc) from None
        except RecursionError:
            raise _fail(file, Pos(0, 0), YAML_PATH, "nesting too deep") from None
        if root is None or (isinstance(root, ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
            pos = Pos(1, 1) if root is None else _pos(root)
            raise _fail(file, pos, ROOT_PATH, _EMPTY)
        if not isinstance(root, MappingNode):
            pos = _pos(root)
            raise _fail(
                file, pos, ROOT_PATH, f"a scenario is a mapping of keys (`name: ...`), not a {_kind(root)}"
            )
        key_issues = _check_keys(file, root)
        if key_issues:
            raise ScenarioInvalid(key_issues)
        budget = [MAX_EXPANDED_NODES]
        positions: dict[KeyPath, NodePos] = {(): NodePos(_pos(root), _pos(root))}
        try:
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise _yaml_error(file, text, exc) from None
        except RecursionError:
            raise _fail(file, Pos(0, 0), YAML_PATH, "nesting too deep") from None
        # construct_document flattened merge keys (`<<: *base`) into each mapping, so the walk sees
        # merged entries at the position where they are written.
        for path, key, value in _walk(root, (), budget):
            positions[path] = NodePos(_pos(key), _pos(value))
        if budget[0] < 0:
            raise _fail(
                file,
                _pos(root),
                ROOT_PATH,
                f"more than {MAX_EXPANDED_NODES} values once aliases are expanded",
            )
    finally:
        loader.dispose()
    if not isinstance(data, dict):  # pragma: no cover - a MappingNode always constructs a dict
        raise _fail(file, _pos(root), ROOT_PATH, "a scenario is a mapping")
    return Source(file, data, positions)


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "list"
    if isinstance(node, ScalarNode):
        return "single value"
    return "mapping"


def load_source(file: str) -> Source:
    """Read and parse one scenario file."""
    return parse(file, read_text(file))
