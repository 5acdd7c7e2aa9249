"""Every argument of every `novamig` command explains itself in `--help`, with its default.

A user reads `novamig run --help` before anything else; an argument listed by its bare name, or an
optional one whose default is not stated, sends them to the source.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from novamig.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, prog: str = "novamig"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def _arguments() -> Iterator[tuple[str, argparse.Action]]:
    for prog, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(
                action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
            ):
                continue
            yield prog, action


def test_every_argument_has_help() -> None:
    bare = [f"{prog} {a.dest}" for prog, a in _arguments() if not (a.help or "").strip()]
    assert not bare, f"arguments with no help text: {bare}"


def test_every_option_states_its_default() -> None:
    silent = [
        f"{prog} {'/'.join(a.option_strings)}"
        for prog, a in _arguments()
        if a.option_strings and "default" not in (a.help or "")
    ]
    assert not silent, f"options whose help does not state the default: {silent}"


def test_the_walk_reaches_every_subcommand() -> None:
    """The checks above see the nested commands too (`image build`), not only the top level."""
    progs = {prog for prog, _ in _parsers(build_parser())}
    assert {"novamig run", "novamig image build", "novamig image upload", "novamig cloud"} <= progs
