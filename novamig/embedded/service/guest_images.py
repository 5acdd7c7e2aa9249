"""The guest images the driver boots: the tiny guest (built or found once) and the full guest.

The tiny image is looked up (and built when absent, which takes minutes) in a background thread as
soon as the cloud is ready, so the first server does not pay for it and the lookup does not compete
with start-up for the CPU. The full image is only ever found in the image cache, never built here
(``novamig image build full`` builds it): a server of ``novamig-full`` fails with a fault saying so.
"""

from __future__ import annotations

import threading
from typing import Any

from nova import exception

from novamig.guest.full import find_full_image
from novamig.guest.image import build_tiny_image
from novamig.hypervisor import accelerator_for


class GuestImages:
    """The tiny guest image, built (or found in its cache) once, in the background at start-up;
    the full guest image, found (never built) in the cache when a server first asks for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._image: Any = None
        self._error: BaseException | None = None
        self._full: Any = None

    def prefetch(self) -> None:
        """Start finding (or building) the tiny image in the background, once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, name="novamig-image", daemon=True)
                self._thread.start()

    def _build(self) -> None:
        try:
            self._image = build_tiny_image()
            accelerator_for(self._image)  # decide KVM/TCG once, before the first server boots
        except BaseException as exc:
            self._error = exc

    def get(self) -> Any:
        """The tiny guest image (``novamig.guest.image.GuestImage``), waiting for the prefetch."""
        self.prefetch()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise exception.NovaException(f"novamig: the tiny guest image is not available: {self._error}")
        return self._image

    def get_full(self) -> Any:
        """The full guest image (``novamig.guest.full.FullImage``) from the cache."""
        tiny = self.get()
        with self._lock:
            if self._full is None:
                self._full = find_full_image(tiny=tiny)
            if self._full is None:
                raise exception.NovaException(
                    "novamig: the full guest image is not in the image cache (novamig image build full)"
                )
            return self._full


IMAGES = GuestImages()
