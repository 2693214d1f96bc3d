"""`mlgo-clang` / `mlgo-clang++`: drop-in CC/CXX that compile with mlgo's policies.

A compile job (`-c`, one C/C++ source) runs clang-19 with the register allocator's eviction
advisor in interactive mode, served by the native host (policy from MLGO_REGALLOC_POLICY,
default `proxy`; `default` turns it off), plus the inliner plugin when MLGO_INLINE_POLICY is
set. Every other invocation (preprocessing, linking, several sources, --version ...) execs
clang-19 unchanged.

If the host cannot be built or started, or fails, that is an error; with MLGO_FALLBACK=1 the
wrapper warns and compiles with plain clang-19 instead.

This runs once per compile, so it imports only the standard library and mlgo.serving's light
modules, and spawns the host with posix_spawn (the compiler with fork, to tie it to our life).
Python's start-up still costs more than a small compile: `mlgo-clang --print-launcher` prints
the path of a native launcher (mlgo/serving/launcher.c) that does the same for the current
policies with no Python per compile, e.g. CC="$(mlgo-clang --print-launcher)".
"""

from __future__ import annotations

import os
import signal
import sys

DEFAULT_HOST_OPEN_TIMEOUT = 3600
# The longest wait the host can arm (alarm() takes an unsigned int of seconds; keep it signed).
MAX_HOST_OPEN_TIMEOUT = 2**31 - 1
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# Options whose value is the next argument (so it is not mistaken for an input file).
_TAKES_VALUE = frozenset("""
-o -I -D -U -L -F -T -u -z -x -MF -MT -MQ -MJ -include -imacros -isystem -iquote -idirafter
-iprefix -iwithprefix -iwithprefixbefore -isysroot --sysroot -Xclang -Xlinker -Xassembler
-Xpreprocessor -Xarch_device -Xarch_host -mllvm -target -arch -gcc-toolchain -resource-dir
-ivfsoverlay -working-directory -main-file-name -serialize-diagnostics -dependency-file
-aux-triple -ccc-install-dir -fmodules-cache-path --include-directory --define-macro
-Xopenmp-target -cxx-isystem -iframework -include-pch --param
""".split())
# C/C++ (also preprocessed) and LLVM IR: everything that reaches the register allocator.
_SOURCE_EXTENSIONS = frozenset(
    ".c .i .cc .cp .cpp .cxx .c++ .C .CC .CPP .ii .cppm .bc .ll".split())
_SOURCE_LANGUAGES = frozenset("c c++ cpp-output c++-cpp-output ir".split())
# Any of these makes the invocation something other than "compile one source to an object".
_PASS_THROUGH_FLAGS = frozenset("""
-E -M -MM -S -### --version -v --help -help -fsyntax-only -emit-llvm -emit-ast -print-targets
-dumpversion -dumpmachine -print-search-dirs -print-resource-dir -print-libgcc-file-name
-print-prog-name -print-file-name -print-multiarch -print-effective-triple -print-target-triple
-fdriver-only -save-temps
""".split())
# Invocations that neither compile to an object nor link.
_NO_LINK_FLAGS = frozenset("-c -E -S -M -MM -fsyntax-only -### --version".split())


def parse_duration(name: str, text: str) -> int:
    """Whole seconds from `90`, `90s`, `5m` or `1h`; ValueError (one line naming the variable)
    for anything else, so that `1h` is never read as 1 second."""
    number = text.rstrip("smh")
    unit = text[len(number):]
    if not number.isascii() or not number.isdigit() or unit not in _DURATION_UNITS:
        raise ValueError(f"{name}={text!r} is not a duration: give whole seconds, or a number "
                         "with s, m or h (90, 90s, 5m, 1h)")
    seconds = int(number) * _DURATION_UNITS[unit]
    if not 1 <= seconds <= MAX_HOST_OPEN_TIMEOUT:
        raise ValueError(f"{name}={text!r} is out of range: from 1s to "
                         f"{MAX_HOST_OPEN_TIMEOUT}s")
    return seconds


def host_open_timeout() -> int:
    """MLGO_HOST_OPEN_TIMEOUT in seconds (default an hour): how long the host waits for the
    compiler to open the channel."""
    text = os.environ.get("MLGO_HOST_OPEN_TIMEOUT")
    if text is None:
        return DEFAULT_HOST_OPEN_TIMEOUT
    return parse_duration("MLGO_HOST_OPEN_TIMEOUT", text)


class ResponseFileError(ValueError):
    """An @file argument names a file that cannot be read or split into arguments."""


def _expand_response_files(args: list[str], depth: int = 0) -> list[str]:
    """Arguments with @file expanded, for classification only (clang reads the files itself)."""
    if depth > 8 or not any(a.startswith("@") for a in args):
        return args
    import shlex

    out: list[str] = []
    for a in args:
        if a.startswith("@") and os.path.isfile(a[1:]):
            try:
                with open(a[1:]) as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ResponseFileError(f"{a[1:]}: cannot read the response file: {e}") from e
            try:
                words = shlex.split(text)
            except ValueError as e:
                raise ResponseFileError(
                    f"{a[1:]}: cannot parse the response file: {str(e).lower()}") from e
            out += _expand_response_files(words, depth + 1)
        else:
            out.append(a)
    return out


def pass_through_reason(args: list[str]) -> str | None:
    """Why this invocation is not a single-source compile job, or None if it is one."""
    args = _expand_response_files(args)
    if "-c" not in args:
        return "not a compile-only job (no -c)"
    sources, others, language = [], [], None
    i = 0
    while i < len(args):
        a = args[i]
        if a in _PASS_THROUGH_FLAGS or a.startswith("-save-temps="):
            return f"{a} given"
        if a == "-x" and i + 1 < len(args):
            language = args[i + 1]
            if language not in _SOURCE_LANGUAGES and language != "none":
                return f"-x {language}"
        elif a.startswith("-x") and len(a) > 2:
            language = a[2:]
            if language not in _SOURCE_LANGUAGES and language != "none":
                return f"-x {language}"
        if a in _TAKES_VALUE:
            i += 2
            continue
        if a == "-":
            sources.append(a)
        elif not a.startswith("-"):
            ext = os.path.splitext(a)[1]
            (sources if ext in _SOURCE_EXTENSIONS or language in _SOURCE_LANGUAGES
             else others).append(a)
        i += 1
    if others:
        return f"non-source inputs {others[:3]}"
    if len(sources) != 1:
        return f"{len(sources)} source files"
    return None


def lto_flag(args: list[str]) -> str | None:
    """The -flto / -flto=MODE in effect (the last one, unless -fno-lto follows it), or None."""
    found = None
    for a in args:
        if a == "-flto" or a.startswith("-flto="):
            found = a
        elif a == "-fno-lto":
            found = None
    return found


def is_link(args: list[str]) -> bool:
    """Whether the driver would link: an input and none of the flags that stop before."""
    return not any(a in _NO_LINK_FLAGS or a.startswith("-print-") for a in args) and any(
        not a.startswith("-") for a in args)


def _summary_line(problem: str, policy: str, notes: str) -> None:
    """One line of MLGO_DECISION_SUMMARY (format in mlgo/serving/summary.py) for what this
    invocation did not serve."""
    path = os.environ.get("MLGO_DECISION_SUMMARY")
    if not path:
        return
    line = f"{problem}\t{policy}\t-\t0\t-\t{notes}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write: lines of concurrent compiles stay whole
        finally:
            os.close(fd)
    except OSError as e:
        _warn(f"cannot write MLGO_DECISION_SUMMARY {path}: {e.strerror}")


def _lto_link_plugin(args: list[str], inline_policy: str | None) -> list[str]:
    """At an -flto link, the flag that makes lld run the inliner policy too ([] and a warning
    when it cannot: only lld loads pass plugins)."""
    if not inline_policy:
        return []
    if "-fuse-ld=lld" not in args:
        _warn(f"-flto link without -fuse-ld=lld: the inline policy {inline_policy!r} is not "
              "applied to the link's inlining (only lld can load the plugin)")
        return []
    from mlgo.errors import MlgoError
    from mlgo.serving.plugin import plugin_for

    try:
        return [f"-Wl,--load-pass-plugin={plugin_for(inline_policy)}"]
    except MlgoError as e:
        if not _fallback_allowed():
            sys.exit(_error(f"inliner plugin for {inline_policy!r}: {e}"))
        _warn(f"inliner plugin for {inline_policy!r} unavailable, the link uses clang's own "
              f"inliner (MLGO_FALLBACK=1): {e}")
        return []


def _warn(msg: str) -> None:
    print(f"mlgo-clang: warning: {msg}", file=sys.stderr)


def _error(msg: str) -> int:
    print(f"mlgo-clang: error: {msg}", file=sys.stderr)
    return 1


def _fallback_allowed() -> bool:
    return os.environ.get("MLGO_FALLBACK") == "1"


def _exec(argv: list[str]) -> None:
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        sys.exit(_error(f"cannot run {argv[0]}: {e}"))


def run(driver: str, args: list[str]) -> int:
    """Compile (or pass through) and return clang's exit status, or -N if signal N ended it."""
    from mlgo.errors import MlgoError
    from mlgo.serving.host import EXIT_FEATURE_MISMATCH, _compiler, host_for

    try:
        clang = _compiler(driver)
    except MlgoError as e:
        return _error(str(e))
    try:
        reason = pass_through_reason(args)
        expanded = _expand_response_files(args)
    except ResponseFileError as e:
        return _error(str(e))
    regalloc_policy = os.environ.get("MLGO_REGALLOC_POLICY", "proxy")
    inline_policy = os.environ.get("MLGO_INLINE_POLICY")
    lto = lto_flag(expanded)
    if reason is not None:
        if lto and is_link(expanded):
            # The whole program's code generation happens here, inside the linker.
            if regalloc_policy != "default":
                _warn(f"{lto} link: code generation (and register allocation) runs in the "
                      f"linker, which mlgo does not serve: the regalloc policy "
                      f"{regalloc_policy!r} is not applied to this program")
                _summary_line("regalloc", regalloc_policy, "lto-link-not-served")
            _exec([clang, *_lto_link_plugin(expanded, inline_policy), *args])
        _exec([clang, *args])

    extra: list[str] = []
    if inline_policy:
        try:
            from mlgo.serving.plugin import plugin_for

            extra.append(f"-fpass-plugin={plugin_for(inline_policy)}")
        except MlgoError as e:
            if not _fallback_allowed():
                return _error(f"inliner plugin for {inline_policy!r}: {e}")
            _warn(f"inliner plugin for {inline_policy!r} unavailable, using clang's own "
                  f"inliner (MLGO_FALLBACK=1): {e}")

    if regalloc_policy == "default":
        _exec([clang, *extra, *args])
    if lto:
        # The object is bitcode: registers are allocated at the link (warned about there too).
        _warn(f"{lto}: this compile makes bitcode and its registers are allocated at the link, "
              f"which mlgo does not serve: the regalloc policy {regalloc_policy!r} is not "
              "applied")
        _summary_line("regalloc", regalloc_policy, "lto-not-served")
        _exec([clang, *extra, *args])
    try:
        host = str(host_for(regalloc_policy))
    except MlgoError as e:
        if not _fallback_allowed():
            return _error(f"regalloc host for {regalloc_policy!r}: {e}")
        _warn(f"regalloc host for {regalloc_policy!r} unavailable, compiling with plain "
              f"clang-19 (MLGO_FALLBACK=1): {e}")
        _exec([clang, *extra, *args])
    return _serve_compile(clang, host, extra, args, regalloc_policy, EXIT_FEATURE_MISMATCH)


def _serve_compile(clang: str, host: str, extra: list[str], args: list[str], policy: str,
                   feature_mismatch_status: int) -> int:
    try:
        open_timeout = host_open_timeout()
    except ValueError as e:
        return _error(str(e))
    try:
        workdir = _private_dir()
    except OSError as e:
        if not _fallback_allowed():
            return _error(f"cannot create the channel directory: {e}")
        _warn(f"cannot create the channel directory, compiling with plain clang-19 "
              f"(MLGO_FALLBACK=1): {e}")
        return _run_plain(clang, [*extra, *args], [])
    base = os.path.join(workdir, "channel")
    fifos = [base + ".in", base + ".out"]
    host_pid = clang_pid = None
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for pid in (clang_pid, host_pid):
            if pid is not None:
                try:
                    os.kill(pid, signum if pid == clang_pid else signal.SIGKILL)
                except ProcessLookupError:
                    pass

    previous = {s: signal.signal(s, forward) for s in _FORWARDED_SIGNALS}
    try:
        try:
            for fifo in fifos:
                os.mkfifo(fifo, 0o600)
            host_pid = os.posix_spawn(host, [host, base, str(open_timeout), str(os.getpid())],
                                      os.environ)
        except OSError as e:
            if not _fallback_allowed():
                return _error(f"cannot start the regalloc host {host}: {e}")
            _warn(f"cannot start the regalloc host {host}, compiling with plain clang-19 "
                  f"(MLGO_FALLBACK=1): {e}")
            host_pid = None
            return _run_plain(clang, [*extra, *args], received)
        if received:
            return -received[0]
        channel = ["-mllvm", "-regalloc-enable-advisor=release",
                   "-mllvm", f"-regalloc-evict-interactive-channel-base={base}"]
        try:
            clang_pid = _spawn_compiler([clang, *channel, *extra, *args])
        except OSError as e:
            return _error(f"cannot run {clang}: {e}")

        clang_status = host_status = None
        while clang_status is None:
            pid, status = os.waitpid(-1, 0)
            if pid == clang_pid:
                clang_status = status
            elif pid == host_pid:
                host_status = status
                host_pid = None
                if os.waitstatus_to_exitcode(status) != 0:
                    # A compiler whose host is gone waits for advice forever: stop it.
                    os.kill(clang_pid, signal.SIGKILL)
                    os.waitpid(clang_pid, 0)
                    clang_pid = None
                    break
        if host_status is not None and os.waitstatus_to_exitcode(host_status) != 0:
            code = os.waitstatus_to_exitcode(host_status)
            if received:
                return -received[0]
            if _fallback_allowed():
                _warn(f"the regalloc host for {policy!r} failed (status {code}), compiling "
                      "with plain clang-19 (MLGO_FALLBACK=1)")
                return _run_plain(clang, [*extra, *args], received)
            hint = (" (the policy was trained on other features than this compiler sends)"
                    if code == feature_mismatch_status else "")
            if code < 0:  # no message of its own to point at
                return _error(f"the regalloc host {host} for {policy!r} was killed by signal "
                              f"{-code} ({signal.strsignal(-code)})")
            return _error(f"the regalloc host for {policy!r} failed with status {code}{hint}; "
                          "see its message above")
        clang_pid = None
        return _exit_status(clang_status)
    finally:
        for pid in (clang_pid, host_pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        for fifo in fifos:
            try:
                os.unlink(fifo)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(workdir)
        except OSError:
            pass
        for s, handler in previous.items():
            signal.signal(s, handler)


def _private_dir() -> str:
    """A new directory only we can use, for the FIFOs (tempfile.mkdtemp without importing
    tempfile, which pulls in shutil and random on every compile)."""
    parent = os.environ.get("MLGO_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    for _attempt in range(100):
        path = os.path.join(parent, f"mlgo-clang-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: cannot create a private directory for the channel")


def _spawn_compiler(argv: list[str]) -> int:
    """Start the compiler, which dies with us (PR_SET_PDEATHSIG): a compiler that outlived the
    wrapper (kill -9) would block for ever opening a channel nobody serves, holding the
    caller's stdout and stderr. posix_spawn cannot ask for that, so this forks; a failed exec
    comes back through a close-on-exec pipe as the OSError posix_spawn would raise."""
    parent = os.getpid()
    report_r, report_w = os.pipe()  # both close-on-exec
    pid = os.fork()
    if pid == 0:  # the child: never returns into the wrapper's code
        status = 127
        try:
            os.close(report_r)
            for s in _FORWARDED_SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            import ctypes  # only in the child: the wrapper itself does not pay for it

            pr_set_pdeathsig = 1
            if (ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL) != 0
                    or os.getppid() != parent):
                os._exit(status)  # our parent is already gone: do not compile for nobody
            os.execv(argv[0], argv)
        except OSError as e:
            os.write(report_w, str(e.errno or 0).encode())
        finally:
            os._exit(status)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        errno = int(failure)
        raise OSError(errno, os.strerror(errno), argv[0])
    return pid


def _run_plain(clang: str, args: list[str], received: list[int]) -> int:
    pid = _spawn_compiler([clang, *args])
    _, status = os.waitpid(pid, 0)
    return _exit_status(status)


def _exit_status(status: int) -> int:
    """clang's exit status, or -N if signal N killed it (as subprocess reports it)."""
    return os.waitstatus_to_exitcode(status)


def _exit(code: int) -> None:
    """Exit like clang did: with its status, or killed by the same signal, so that make and
    shells report an interrupted compile as interrupted. Called after all clean-up."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


def print_launcher(driver: str) -> int:
    """Print the native launcher for the current policies, building what it needs once."""
    from mlgo.errors import MlgoError
    from mlgo.serving.launcher import launcher_for

    try:
        print(launcher_for(driver))
    except MlgoError as e:
        return _error(f"cannot make the native launcher: {e}")
    return 0


def _main(driver: str) -> None:
    if sys.argv[1:] == ["--print-launcher"]:
        sys.exit(print_launcher(driver))
    _exit(run(driver, sys.argv[1:]))


def main_c() -> None:
    _main("clang")


def main_cxx() -> None:
    _main("clang++")
