"""One monotonic clock per case: every time inside a case is seconds since the case started.

Wall clocks jump (NTP); results need differences, so everything is taken from time.monotonic()
and made relative to one origin.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CaseClock:
    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self.origin = source()

    def now(self) -> float:
        return round(self._source() - self.origin, 6)

    def at(self, monotonic_time: float) -> float:
        """A monotonic time taken elsewhere (a probe), as case seconds."""
        return round(monotonic_time - self.origin, 6)
