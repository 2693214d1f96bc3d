#!/usr/bin/env bash
# The test command: installs what is missing (see setup.sh), then runs the whole suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
.venv/bin/ruff check mlgo mlgo_base corpus_tools tests
exec .venv/bin/python -m pytest "$@"
