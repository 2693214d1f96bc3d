#!/usr/bin/env bash
# Runs CMD as on a machine where VERSION is the only LLVM mlgo supports that is installed, without
# uninstalling anything: in a private mount namespace, every file of the other supported versions'
# Debian packages (clang-N, llvm-N, llvm-N-dev, lld-N, libllvmN, libclang*-N ...) is made absent,
# so /usr/bin/clang-19, /usr/lib/llvm-19, /usr/include/llvm-19 and libLLVM.so.19.1 do not exist
# for CMD and its children. The rest of the machine, and every other process, is untouched.
#
#   sudo scripts/with-only-llvm.sh 22 env MLGO_LLVM_VERSION=22 .venv/bin/python -m pytest -q
#
# Needs root (a mount namespace and overlay mounts). Other LLVM versions (e.g. Debian's default
# llvm-14) stay: mlgo never looks at them. The package database is not hidden, so dpkg still
# lists the hidden packages as installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "with-only-llvm: $*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: $0 VERSION CMD [ARG...]"
version=$1
shift
# The versions mlgo supports, from the one place that lists them.
supported=$(sed -n 's/^SUPPORTED_MAJORS = (\([0-9, ]*\))$/\1/p' "$root/mlgo_base/toolchain.py" | tr ',' ' ')
[ -n "$supported" ] || die "cannot read SUPPORTED_MAJORS from $root/mlgo_base/toolchain.py"
case " $supported " in
  *" $version "*) ;;
  *) die "VERSION $version is not one mlgo supports (one of:$supported)" ;;
esac
[ "$(id -u)" -eq 0 ] || die "needs root: it hides files in a private mount namespace"

if [ -z "${MLGO_ONLY_LLVM_WORK:-}" ]; then
  # The whiteout layers live in a directory removed once the namespace (and its mounts) is gone.
  work=$(mktemp -d /tmp/with-only-llvm.XXXXXX)
  trap 'rm -rf --one-file-system "$work"' EXIT
  status=0
  unshare --mount --propagation private env MLGO_ONLY_LLVM_WORK="$work" "$0" "$version" "$@" ||
    status=$?
  exit "$status"
fi
work=$MLGO_ONLY_LLVM_WORK
unset MLGO_ONLY_LLVM_WORK

hidden_versions=()
for v in $supported; do
  [ "$v" = "$version" ] || hidden_versions+=("$v")
done

# The installed LLVM packages of the hidden versions: names with llvm/clang/lld/... and the
# version as a separate number (clang-19, libllvm19, libclang1-19, libclang-common-19-dev).
packages=()
for v in "${hidden_versions[@]}"; do
  while read -r p; do
    packages+=("$p")
  done < <(dpkg-query -W -f='${db:Status-Status} ${binary:Package}\n' |
           awk '$1 == "installed" {print $2}' |
           grep -E '(llvm|clang|lld|lldb|mlir|polly|bolt|flang|libomp|libc\+\+|libunwind)' |
           grep -E "(^|[^0-9.])${v}(\$|[-:])" || true)
done
if [ ${#packages[@]} -eq 0 ]; then
  echo "with-only-llvm: no package of LLVM ${hidden_versions[*]} is installed; nothing to hide" >&2
  exec "$@"
fi

# What to hide: each path the packages own that no other installed package owns or has files
# under, keeping only the topmost (all of /usr/lib/llvm-19 at once, with whatever it holds that no
# package lists, e.g. Python caches; a shared directory such as /usr/bin stays).
# Output: "PARENT NAME" lines, shallowest parents first.
python3 - "${packages[@]}" >"$work/hide" <<'EOF_PY'
import glob
import os
import sys

hidden = set(sys.argv[1:])


def paths(list_file: str) -> set[str]:
    with open(list_file, errors="surrogateescape") as f:
        return {os.path.normpath(p) for p in f.read().split("\n") if p.startswith("/")}


owned, others = set(), set()
for list_file in glob.glob("/var/lib/dpkg/info/*.list"):
    name = os.path.basename(list_file)[: -len(".list")]
    (owned if name in hidden or name.split(":")[0] in hidden else others).update(paths(list_file))
shared = set()  # paths other packages own, and every directory above them
for p in others:
    while p not in shared and p != "/":
        shared.add(p)
        p = os.path.dirname(p)


def whole(p: str) -> bool:
    return p in owned and p not in shared and os.path.lexists(p)


hide = [p for p in owned if whole(p) and not whole(os.path.dirname(p))]
for p in sorted(hide, key=lambda p: (p.count("/"), p)):
    print(os.path.dirname(p), os.path.basename(p))
EOF_PY

# Each parent directory gets a read-only overlay whose top layer holds a whiteout (a 0/0
# character device) per hidden name, over the directory as a bind of the untouched root shows it
# (so overlays never stack). Parents are mounted shallowest first, so a deeper overlay
# (/usr/lib/x86_64-linux-gnu) is not covered by the one above it (/usr/lib).
mkdir "$work/root"
mount --rbind / "$work/root"
count=0
current=""
mount_layer() {
  [ -n "$current" ] || return 0
  mount -t overlay overlay -o "lowerdir=$layer:$work/root$current" "$current"
}
while read -r parent name; do
  if [ "$parent" != "$current" ]; then
    mount_layer
    current=$parent
    layer=$work/layer$count
    mkdir "$layer"
  fi
  mknod "$layer/$name" c 0 0
  count=$((count + 1))
done <"$work/hide"
mount_layer

for v in "${hidden_versions[@]}"; do
  if command -v "clang-$v" >/dev/null || [ -e "/usr/lib/llvm-$v" ] || [ -e "/usr/include/llvm-$v" ]; then
    die "LLVM $v is still visible after hiding (a file outside its packages?)"
  fi
done
echo "with-only-llvm: LLVM ${hidden_versions[*]} hidden (${#packages[@]} packages, $count paths); running: $*" >&2
exec "$@"
