"""The embedded cloud: real Keystone, Placement and Nova on this machine, reached like DevStack.

``EmbeddedCloud`` (``novamig.embedded.cloud``) starts one; ``novamig cloud up|down|status``
(``novamig.embedded.commands``) drives one from the shell; ``novamig.embedded.pytest_fixtures``
offers one per test session. Importing this package imports neither Nova nor openstacksdk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from novamig.embedded.cloud import CloudStartError, EmbeddedCloud

__all__ = ["CloudStartError", "EmbeddedCloud"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from novamig.embedded import cloud

        return getattr(cloud, name)
    raise AttributeError(name)
