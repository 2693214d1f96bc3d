#!/usr/bin/env bash
# Installs what mlgo needs on Debian 12: the LLVM 19 and LLVM 22 toolchains from Debian's
# packages (clang-22 comes from the security suite; MLGO_LLVM_VERSION chooses, default 19, and
# when set only that version is installed) and a
# Python virtual environment (.venv) with mlgo and its test extras. Safe to run again: a second
# run only checks and returns in a second or two.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Both LLVM versions, or with MLGO_LLVM_VERSION=19|22 only that one (a machine with clang-22 alone).
case "${MLGO_LLVM_VERSION:-}" in
  "") llvm_versions=(19 22) ;;
  19|22) llvm_versions=("$MLGO_LLVM_VERSION") ;;
  *) echo "mlgo setup: MLGO_LLVM_VERSION='$MLGO_LLVM_VERSION': mlgo runs on LLVM 19 or 22" >&2; exit 1 ;;
esac
apt_packages=()
for v in "${llvm_versions[@]}"; do
  apt_packages+=("clang-$v" "llvm-$v" "llvm-$v-dev" "lld-$v")
done
apt_packages+=(bear dpkg-dev make cmake procps valgrind strace)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "mlgo setup: missing Debian packages: ${missing[*]}" >&2
    echo "Install them as root, then run this again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "mlgo setup: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mlgo setup: Python 3.11 or newer is needed ($python is $("$python" --version 2>&1))." >&2
  echo "Set PYTHON=/path/to/python3.11 and run this again." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "mlgo setup: creating virtual environment .venv"
  "$python" -m venv .venv
fi
# Reinstall only when the dependency list changed since the last successful install.
stamp=.venv/.mlgo-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import mlgo' 2>/dev/null; then
  echo "mlgo setup: installing mlgo and its test extras into .venv (first run downloads TensorFlow, ~600 MB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
