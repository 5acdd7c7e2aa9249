#!/usr/bin/env bash
# The main job (README "Quick start"): set-up, then scenarios/smoke.yaml on the embedded cloud.
# `novamig run` prints the path of the HTML report when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/novamig run scenarios/smoke.yaml "$@"
