#!/usr/bin/env bash
# The test command (README "Quick start", and what CI runs): set-up, then the quality gates
# (ruff, mypy), then the whole pytest suite, fast tier and real-QEMU tier. Extra arguments go to
# pytest, e.g. `tools/test.sh -m "not slow"` while working.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

echo "novamig test: ruff"
.venv/bin/ruff check novamig tests bench
.venv/bin/ruff format --check novamig tests bench
echo "novamig test: mypy"
.venv/bin/mypy
echo "novamig test: guest images (cached after the first build)"
.venv/bin/novamig image build tiny
.venv/bin/novamig image build full
.venv/bin/novamig image build full --format qcow2  # the Glance form: image upload and cloud-init tests
echo "novamig test: pytest"
# pytest exits 5 when it collects no test: with `set -e` that fails this script, as it must.
exec .venv/bin/pytest "$@"
