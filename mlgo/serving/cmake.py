"""A CMake initial-cache file (`cmake -C FILE`) that serves an inliner policy in every build
type: CMake appends its build type's flags (Release: -O3) after CMAKE_C_FLAGS, so `-Oz` in
CMAKE_C_FLAGS alone loses; here the build types' own entries say -Oz.

Every value is written as a quoted CMake argument with its `\\`, `"` and `$` escaped. What
quoting cannot make safe is refused in one line naming the value: a character that is not
printable (a newline would end the comment naming the policy and start CMake code), `;` and
`\\` in a compiler (CMake reads a list there, compiler plus arguments, and turns a backslash
in a file path into `/`), and in the plugin's path anything but letters, digits and
`/._+-=@%:~`, because CMake pastes CMAKE_<LANG>_FLAGS into the build tool's shell commands as
they are, and `-Wl,` splits the linker flag at commas.
"""

from __future__ import annotations

import string

from mlgo_base.errors import MlgoError

# CMake's defaults for these build types, with their optimization level replaced by -Oz.
BUILD_TYPE_FLAGS = {
    "RELEASE": "-Oz -DNDEBUG",
    "MINSIZEREL": "-Oz -DNDEBUG",
    "RELWITHDEBINFO": "-Oz -g -DNDEBUG",
}
LANGUAGES = ("C", "CXX")
LINK_KINDS = ("EXE", "SHARED", "MODULE")


_FLAG_CHARACTERS = frozenset(string.ascii_letters + string.digits + "/._+-=@%:~")


class CMakeFlagsError(MlgoError):
    """A value that cannot be written into the initial-cache file safely."""


def _check(what: str, value: str, *, in_flags: bool = False) -> None:
    for ch in value:
        if not ch.isprintable():
            why = "it is not printable"
        elif ch == ";" and not in_flags:
            why = "CMake would read the value as a list"
        elif ch == "\\" and not in_flags:
            why = "CMake turns it into '/' in a file path"
        elif in_flags and ch not in _FLAG_CHARACTERS:
            why = ("CMake passes compiler and linker flags to the build's shell unquoted "
                   "(use a path of letters, digits and /._+-=@%:~)")
        else:
            continue
        raise CMakeFlagsError(f"{what} {value!r}: cannot write {ch!r} into a CMake file safely: "
                              f"{why}")


def _cmake_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def initial_cache(plugin: str, policy: str, compilers: dict[str, str], *,
                  lld: bool = True) -> str:
    """The text of the initial-cache file for `plugin` (serving `policy`), compiling with
    `compilers` ({"C": clang-19 or a launcher, "CXX": ...}: the plugin loads only into clang
    19). With `lld`, links use lld and load the plugin too, so -flto builds
    (CMAKE_INTERPROCEDURAL_OPTIMIZATION) get the policy at the link's inlining as well."""
    _check("policy", policy)
    _check("inliner plugin", plugin, in_flags=True)
    for lang in LANGUAGES:
        _check(f"{lang} compiler", compilers[lang])
    lines = [f"# mlgo cmake-flags {policy}: use as `cmake -C THIS_FILE ...`.",
             "# Every optimizing build type compiles at -Oz with the inliner plugin."]
    for lang in LANGUAGES:
        lines.append(f"set(CMAKE_{lang}_COMPILER {_cmake_string(compilers[lang])} "
                     'CACHE FILEPATH "")')
        lines.append(f'set(CMAKE_{lang}_FLAGS {_cmake_string(f"-fpass-plugin={plugin}")} '
                     'CACHE STRING "")')
        for build_type, flags in BUILD_TYPE_FLAGS.items():
            lines.append(f"set(CMAKE_{lang}_FLAGS_{build_type} {_cmake_string(flags)} "
                         'CACHE STRING "")')
    if lld:
        lines.append("# lld runs the policy at LTO links too (GNU ld's LLVMgold cannot).")
        link = _cmake_string(f"-fuse-ld=lld -Wl,--load-pass-plugin={plugin}")
        for kind in LINK_KINDS:
            lines.append(f'set(CMAKE_{kind}_LINKER_FLAGS {link} CACHE STRING "")')
    return "\n".join(lines) + "\n"
