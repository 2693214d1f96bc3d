#!/usr/bin/env bash
# The main job: installs what is missing (see setup.sh), then runs the end-to-end demo on a
# small real project (Debian's lua5.4 source package). Outputs go to ./demo-output.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/mlgo demo --output "${MLGO_DEMO_OUTPUT:-demo-output}" "$@"
