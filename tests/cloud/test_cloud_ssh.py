"""The SSH transport to compute hosts (`novamig.cloud.ssh`): every way a call fails is one error type,
so a probe or a host policy reading over it has one thing to catch and a reason to give."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from novamig.cloud.ssh import HostSsh, SshError, run_ssh


def test_ssh_failures_are_one_error_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text("#!/bin/sh\nexec sleep 5\n")
    (bindir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(SshError, match=r"timed out after 0\.3 s"):
        run_ssh("stack@192.0.2.10", "true", timeout_s=0.3)
    with pytest.raises(SshError, match="no SSH target"):
        HostSsh({}, 1.0)("compute1", "true")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SshError, match="cannot run ssh"):
        run_ssh("stack@192.0.2.10", "true", timeout_s=1.0)
