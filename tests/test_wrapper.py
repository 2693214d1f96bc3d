"""mlgo-clang: the regalloc host and the compiler wrapper, against the real clang-19."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import SOURCES, make_small_corpus

from corpus_tools.corpus import Corpus
from mlgo import env as mlgo_env
from mlgo.cli import wrapper
from mlgo.compiler.interactive import InteractiveCompile
from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.problems import get_problem
from mlgo.serving import codegen, host, launcher

BIN = Path(sys.executable).parent
# Every behaviour test runs against both per-compile paths: the Python wrapper and the native
# launcher that `mlgo-clang --print-launcher` makes for the same environment.
WRAPPERS = ("python", "native")


def _wrapper(kind: str, driver: str = "clang") -> str:
    """The command to use as CC: the Python entry point, or the native launcher made for the
    current environment (MLGO_REGALLOC_POLICY etc.)."""
    if kind == "python":
        return str(BIN / f"mlgo-{driver}")
    return launcher.launcher_for(driver)


@pytest.fixture(scope="module")
def proxy_host() -> str:
    return host.host_for("proxy")


@pytest.fixture()
def channel_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the wrapper makes its FIFO directories, so tests can see what it leaves behind."""
    d = tmp_path / "channels"
    d.mkdir()
    monkeypatch.setenv("MLGO_TMPDIR", str(d))
    monkeypatch.delenv("MLGO_INLINE_POLICY", raising=False)
    monkeypatch.delenv("MLGO_REGALLOC_POLICY", raising=False)
    monkeypatch.delenv("MLGO_FALLBACK", raising=False)
    return d


def _host_processes() -> list[int]:
    """Our user's processes running any mlgo regalloc host."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if exe.endswith("/" + host.HOST_FILE):
            pids.append(int(entry))
    return pids


def _assert_clean(channel_dir: Path, hosts_before: list[int]) -> None:
    assert list(channel_dir.iterdir()) == [], "FIFOs or channel directories left behind"
    deadline = time.monotonic() + 5
    while set(_host_processes()) - set(hosts_before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_host_processes()) - set(hosts_before) == set(), "host processes left behind"


def _write_sources(d: Path) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in SOURCES.items():
        (d / name).write_text(text)
        paths.append(d / name)
    return paths


# -- classification -----------------------------------------------------------------------------

@pytest.mark.parametrize("args,compile_job", [
    (["-O2", "-c", "a.c", "-o", "a.o"], True),
    (["-c", "-x", "ir", "m.bc", "-O2"], True),
    (["-c", "-I", "include.c", "a.cpp"], True),  # -I's value is not a source
    (["-E", "a.c"], False),
    (["-c", "-E", "a.c"], False),
    (["--version"], False),
    (["a.o", "b.o", "-o", "prog"], False),
    (["-c", "a.c", "b.c"], False),
    (["-c", "-x", "assembler", "a.s"], False),
    (["-c", "a.c", "-M"], False),
    (["-c", "a.c", "-###"], False),
    (["-c", "a.c", "-emit-llvm"], False),
])
def test_compile_jobs_are_told_apart(args: list[str], compile_job: bool) -> None:
    assert (wrapper.pass_through_reason(args) is None) == compile_job


def test_response_files_are_read_for_classification(tmp_path: Path) -> None:
    rsp = tmp_path / "args.rsp"
    rsp.write_text("-c 'a b.c' -o out.o")
    assert wrapper.pass_through_reason([f"@{rsp}"]) is None
    rsp.write_text("a.c b.c -c")
    assert wrapper.pass_through_reason([f"@{rsp}"]) is not None


CLASSIFICATION_CASES = [
    ["-O2", "-c", "a.c", "-o", "a.o"],
    ["-c", "-x", "ir", "m.bc", "-O2"],
    ["-c", "-I", "include.c", "a.cpp"],
    ["-c", "-xc", "noext"],
    ["-c", "-x", "none", "..c"],
    ["-c", "dir.d/.hidden"],
    ["-c", "-"],
    ["-c", "-o", "-E", "a.c"],
    ["-E", "a.c"],
    ["-c", "-E", "a.c"],
    ["--version"],
    ["a.o", "b.o", "-o", "prog"],
    ["-c", "a.c", "b.c"],
    ["-c", "-x", "assembler", "a.s"],
    ["-c", "a.c", "-M"],
    ["-c", "a.c", "-###"],
    ["-c", "a.c", "-emit-llvm"],
    ["-c", "a.c", "-save-temps=obj"],
    ["-c", "a.c", "b.o"],
    ["-c", "@missing.rsp"],
    ["@job.rsp"],
    ["@two.rsp"],
    ["@nested.rsp"],
    ["@hash.rsp"],
]


def test_native_launcher_classifies_like_the_wrapper(tmp_path: Path) -> None:
    """For every case, the launcher passes through exactly when pass_through_reason says so.
    Its host does not exist, so a compile job fails naming it, while a pass-through runs the
    fake compiler, which only records that it ran."""
    (tmp_path / "job.rsp").write_text("""-c 'a b.c' "-o" out\\ file.o""")
    (tmp_path / "hash.rsp").write_text("-c a.c #not-a-comment")  # shlex.split: a word
    (tmp_path / "two.rsp").write_text('-c "a.c" b.c')
    (tmp_path / "nested.rsp").write_text("-O2 @job.rsp")
    fake = tmp_path / "fake-clang"
    fake.write_text(f"#!/bin/sh\necho ran >> {tmp_path}/ran\n")
    fake.chmod(0o755)
    missing_host = tmp_path / "no-host"
    native = launcher.build_launcher(launcher.LauncherConfig(
        "clang", str(fake), "proxy", str(missing_host), None, None))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGO_")}
    jobs = 0
    for args in CLASSIFICATION_CASES:
        (tmp_path / "ran").unlink(missing_ok=True)
        proc = subprocess.run([native, *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=30)
        old = Path.cwd()
        os.chdir(tmp_path)
        try:
            compile_job = wrapper.pass_through_reason(args) is None
        finally:
            os.chdir(old)
        if compile_job:
            jobs += 1
            assert proc.returncode == 1 and str(missing_host) in proc.stderr, args
            assert not (tmp_path / "ran").exists(), args
        else:
            assert proc.returncode == 0 and (tmp_path / "ran").exists(), (args, proc.stderr)
    assert jobs == 8  # both kinds of case are exercised


def test_malformed_response_file_is_an_error_naming_it(tmp_path: Path) -> None:
    rsp = tmp_path / "bad.rsp"
    rsp.write_text("-c 'a.c")
    for cc in (_wrapper("python"), _wrapper("native")):
        proc = subprocess.run([cc, f"@{rsp}"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, cc
        assert f"{rsp}: cannot parse the response file: no closing quotation" in proc.stderr


# -- the host -----------------------------------------------------------------------------------

def test_host_failure_stops_the_compiler(tmp_path: Path, channel_tmp: Path, capfd) -> None:
    """A host whose policy expects other features exits at the header; the compiler, which
    would wait for advice forever, is killed and the wrapper reports the host's message."""
    features = list(codegen.REGALLOC_FEATURES_LLVM19)
    features[2] = ("nr_urgent_v2", "float", 33)
    mismatched = host.build_host(codegen.regalloc_eviction_proxy(features), policy_label="renamed")
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    before = _host_processes()
    rc = wrapper._serve_compile(host._compiler("clang"), mismatched, [],
                                ["-O2", "-c", str(src), "-o", str(tmp_path / "p.o")],
                                "renamed", host.EXIT_FEATURE_MISMATCH)
    err = capfd.readouterr().err
    assert rc == 1
    assert "position 2: compiler 'nr_urgent' (float x33), policy 'nr_urgent_v2' (float x33)" in err
    assert "trained on other features" in err
    _assert_clean(channel_tmp, before)


def test_native_host_failure_stops_the_compiler(tmp_path: Path, channel_tmp: Path) -> None:
    features = list(codegen.REGALLOC_FEATURES_LLVM19)
    features[2] = ("nr_urgent_v2", "float", 33)
    mismatched = host.build_host(codegen.regalloc_eviction_proxy(features), policy_label="renamed")
    native = launcher.build_launcher(launcher.LauncherConfig(
        "clang", host._compiler("clang"), "renamed", mismatched, None, None))
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    before = _host_processes()
    proc = subprocess.run([native, "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MLGO_REGALLOC_POLICY="renamed"))
    assert proc.returncode == 1
    assert ("position 2: compiler 'nr_urgent' (float x33), policy 'nr_urgent_v2' (float x33)"
            in proc.stderr)
    assert "trained on other features" in proc.stderr
    _assert_clean(channel_tmp, before)


def test_host_gives_up_when_the_compiler_never_connects(tmp_path: Path, proxy_host: str) -> None:
    base = tmp_path / "ch"
    os.mkfifo(f"{base}.in")
    os.mkfifo(f"{base}.out")
    t0 = time.monotonic()
    proc = subprocess.run([proxy_host, str(base), "1", "0"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == host.EXIT_NEVER_CONNECTED
    assert "did not open" in proc.stderr and str(base) in proc.stderr
    assert time.monotonic() - t0 < 10


# -- the wrapper --------------------------------------------------------------------------------

def _interactive_proxy(argv: list[str], workdir: Path) -> list[int]:
    """Compile with the Python eviction proxy over mlgo's own interactive channel."""
    base = workdir / "channel"
    argv = [argv[0], "-mllvm", "-regalloc-enable-advisor=release",
            "-mllvm", f"-regalloc-evict-interactive-channel-base={base}", *argv[1:]]
    heuristic = get_problem("regalloc").heuristic("proxy")
    actions = []
    with InteractiveCompile(argv, "ref", workdir, channel_base=base, timeout=120) as c:
        while (obs := c.next_observation()) is not None:
            actions.append(heuristic({k: np.asarray(v) for k, v in obs.features.items()}))
            c.answer(actions[-1])
        c.finish()
    return actions


@pytest.mark.parametrize("kind", WRAPPERS)
def test_wrapper_matches_interactive_mode(tmp_path: Path, channel_tmp: Path,
                                          proxy_host: str, kind: str) -> None:
    """Same objects and decisions as serving eviction_cost_proxy from Python, and the same
    spill cost as mlgo.env measures for the corpus module."""
    corpus = Corpus.load(make_small_corpus(tmp_path / "c"))
    problem = get_problem("regalloc")
    heuristic = problem.heuristic("proxy")
    cc = _wrapper(kind)
    total_decisions = 0
    for module in corpus.modules:
        work = tmp_path / module.name.replace("/", "_")
        work.mkdir()
        args = module.compile_args(extra=problem.measurement_flags(work, cc1=False))
        log = work / "host-decisions.txt"
        proc = subprocess.run([cc, *args, "-o", str(work / "wrapped.o")],
                              env=dict(os.environ, MLGO_HOST_DECISION_LOG=str(log)),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        wrapped_cost = parse_regalloc_remarks(work / "remarks.yaml").total
        decisions = [int(line.split("\t")[2]) for line in log.read_text().splitlines()] \
            if log.exists() else []
        ref_dir = work / "ref"
        ref_dir.mkdir()
        ref_actions = _interactive_proxy(["clang-19", *args, "-o", str(ref_dir / "out.o")],
                                         ref_dir)
        assert decisions == ref_actions, module.name
        assert (work / "wrapped.o").read_bytes() == (ref_dir / "out.o").read_bytes()
        with mlgo_env.make(problem, module) as e:
            assert mlgo_env.run_episode(e, heuristic).measurement.total == wrapped_cost
        total_decisions += len(decisions)
    assert total_decisions > 0  # pressure.c makes the allocator evict
    _assert_clean(channel_tmp, [])


@pytest.mark.parametrize("kind", WRAPPERS)
def test_make_parallel_equals_serial(tmp_path: Path, channel_tmp: Path, proxy_host: str,
                                     kind: str) -> None:
    project = tmp_path / "proj"
    _write_sources(project)
    (project / "main.c").write_text(
        "int twice(int); int leaf(int); long hash(const char *);\n"
        "int main(void) { return (int)(twice(3) + leaf(1) + hash(\"x\")) & 1; }\n")
    (project / "Makefile").write_text(
        "OBJS = calls.o pressure.o leaf.o main.o\n"
        "prog: $(OBJS)\n\t$(CC) $(OBJS) -o prog\n"
        "%.o: %.c\n\t$(CC) -O2 -c $< -o $@\n"
        "clean:\n\trm -f prog $(OBJS)\n")
    before = _host_processes()
    make = ["make", "-s", "-C", str(project), f"CC={_wrapper(kind)}"]
    subprocess.run([*make, "-j2"], check=True, timeout=300)
    parallel = {p.name: p.read_bytes() for p in project.glob("*.o")}
    subprocess.run([*make, "clean"], check=True)
    subprocess.run([*make, "-j1"], check=True, timeout=300)
    serial = {p.name: p.read_bytes() for p in project.glob("*.o")}
    assert len(parallel) == 4 and parallel == serial
    assert subprocess.run([str(project / "prog")]).returncode in (0, 1)
    # The policy was really served: the same build under plain clang-19 differs somewhere.
    plain = subprocess.run(["clang-19", "-O2", "-c", str(project / "pressure.c"), "-o", "-"],
                           capture_output=True, check=True).stdout
    assert plain != serial["pressure.o"]
    _assert_clean(channel_tmp, before)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_failed_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path, proxy_host: str,
                                       kind: str) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undeclared; }\n")
    before = _host_processes()
    proc = subprocess.run([_wrapper(kind), "-O2", "-c", str(bad), "-o", str(tmp_path / "bad.o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "undeclared" in proc.stderr
    _assert_clean(channel_tmp, before)


@pytest.mark.parametrize("kind", WRAPPERS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path,
                                            proxy_host: str, sig: signal.Signals,
                                            kind: str) -> None:
    """A compiler that is still running when the wrapper is interrupted gets the signal; the
    wrapper cleans up and dies of the same signal."""
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\necho started > {tmp_path}/started\nexec sleep 60\n")
    slow.chmod(0o755)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    before = _host_processes()
    proc = subprocess.Popen([_wrapper(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                            env=dict(os.environ, MLGO_CLANG=str(slow)))
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert set(_host_processes()) - set(before)  # the host is waiting for the compiler
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    _assert_clean(channel_tmp, before)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_pass_through_invocations_run_plain_clang(tmp_path: Path, channel_tmp: Path,
                                                  kind: str) -> None:
    cc = _wrapper(kind)
    # A policy name that does not exist: any attempt to serve it would fail loudly.
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    srcs = _write_sources(tmp_path / "src")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([cc, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    assert "clang version 19" in run("--version").stdout
    assert "sum_squares" in run("-E", str(srcs[0])).stdout
    two = run("-O2", "-c", str(srcs[0]), str(srcs[2]))
    assert two.returncode == 0 and (tmp_path / "calls.o").exists()
    (tmp_path / "main.c").write_text("int leaf(int); int main(void) { return leaf(-1); }\n")
    subprocess.run(["clang-19", "-c", str(tmp_path / "main.c"), str(srcs[2])], cwd=tmp_path,
                   check=True)
    link = run("main.o", "leaf.o", "-o", "prog")
    assert link.returncode == 0, link.stderr
    assert subprocess.run([str(tmp_path / "prog")]).returncode == 0
    # ... while a compile job does try to serve it, and says why it cannot.
    job = run("-O2", "-c", str(srcs[2]), "-o", "x.o")
    assert job.returncode == 1 and "no-such-policy" in job.stderr
    assert list(channel_tmp.iterdir()) == []


@pytest.mark.parametrize("kind", WRAPPERS)
def test_fallback_only_when_asked(tmp_path: Path, channel_tmp: Path, kind: str) -> None:
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    cmd = [_wrapper(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and not (tmp_path / "leaf.o").exists()
    assert "error" in refused.stderr
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(env, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and (tmp_path / "leaf.o").exists()
    assert "warning" in allowed.stderr and "MLGO_FALLBACK=1" in allowed.stderr


@pytest.mark.parametrize("kind", WRAPPERS)
def test_inline_policy_adds_the_plugin(tmp_path: Path, channel_tmp: Path, proxy_host: str,
                                       kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlgo.serving.plugin import plugin_for

    plugin_for("cost-threshold")  # built (or found) outside the timed compile
    monkeypatch.setenv("MLGO_INLINE_POLICY", "cost-threshold")
    cc = _wrapper(kind)
    src = tmp_path / "calls.c"
    src.write_text(SOURCES["calls.c"])
    log = tmp_path / "inline-decisions.txt"
    proc = subprocess.run([cc, "-Oz", "-c", str(src), "-o", str(tmp_path / "c.o")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MLGO_PLUGIN_DECISION_LOG=str(log)))
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().strip()


def test_print_launcher_names_the_launcher_for_the_environment(channel_tmp: Path) -> None:
    for driver in launcher.DRIVERS:
        proc = subprocess.run([str(BIN / f"mlgo-{driver}"), "--print-launcher"],
                              capture_output=True, text=True, check=True, timeout=300)
        assert proc.stdout.strip() == launcher.launcher_for(driver)
        assert Path(proc.stdout.strip()).name == f"mlgo-{driver}"
    bad = subprocess.run([str(BIN / "mlgo-clang"), "--print-launcher"], capture_output=True,
                         text=True, env=dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy"),
                         timeout=300)
    assert bad.returncode == 1 and bad.stdout == "" and "no-such-policy" in bad.stderr


def test_native_launcher_compiles_cxx_like_the_wrapper(tmp_path: Path, channel_tmp: Path,
                                                      proxy_host: str) -> None:
    src = tmp_path / "pressure.cpp"
    src.write_text(SOURCES["pressure.c"])
    objects = []
    for kind in WRAPPERS:
        out = tmp_path / f"{kind}.o"
        subprocess.run([_wrapper(kind, "clang++"), "-O2", "-c", str(src), "-o", str(out)],
                       check=True, timeout=120)
        objects.append(out.read_bytes())
    assert objects[0] == objects[1]
    _assert_clean(channel_tmp, [])


def test_native_launcher_with_its_host_gone(tmp_path: Path, channel_tmp: Path) -> None:
    """A launcher outlives the cache entry of its host: an error naming the file, or with
    MLGO_FALLBACK=1 a warning and a plain compile."""
    gone = tmp_path / "removed-host"
    native = launcher.build_launcher(launcher.LauncherConfig(
        "clang", host._compiler("clang"), "proxy", str(gone), None, None))
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    cmd = [native, "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and str(gone) in refused.stderr
    assert not (tmp_path / "leaf.o").exists()
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and (tmp_path / "leaf.o").exists()
    assert "warning" in allowed.stderr and "MLGO_FALLBACK=1" in allowed.stderr
    assert list(channel_tmp.iterdir()) == []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", WRAPPERS)
def test_killed_wrapper_takes_its_compiler_along(tmp_path: Path, channel_tmp: Path,
                                                 proxy_host: str, kind: str) -> None:
    """kill -9 of mlgo-clang or the launcher mid-compile (issue 16): the compiler dies too,
    instead of blocking for ever on its channel while holding the caller's stdout/stderr (a
    `| grep` after the build would hang)."""
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid.tmp\nmv {tmp_path}/pid.tmp "
                    f"{tmp_path}/pid\nexec sleep 60\n")
    slow.chmod(0o755)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    proc = subprocess.Popen([_wrapper(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                            env=dict(os.environ, MLGO_CLANG=str(slow)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    compiler = int((tmp_path / "pid").read_text())
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(compiler) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(compiler)
    if alive:
        os.kill(compiler, signal.SIGKILL)
    assert not alive, "the compiler outlived the wrapper that served it"
    proc.stdout.read()  # end of file: nobody holds the pipe any more
    for leftover in channel_tmp.iterdir():  # kill -9 leaves the FIFOs; nothing waits on them
        for f in leftover.iterdir():
            f.unlink()
        leftover.rmdir()


@pytest.mark.parametrize("kind", WRAPPERS)
def test_host_open_timeout_is_parsed_strictly(tmp_path: Path, channel_tmp: Path,
                                              proxy_host: str, kind: str) -> None:
    """MLGO_HOST_OPEN_TIMEOUT=1h means an hour, not 1 second (issue 16); what cannot be read
    as a duration is refused in one line naming the variable."""
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\nsleep 2\nexec {host._compiler('clang')} \"$@\"\n")
    slow.chmod(0o755)
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    cmd = [_wrapper(kind), "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, MLGO_CLANG=str(slow), MLGO_HOST_OPEN_TIMEOUT="1h"))
    assert ok.returncode == 0, ok.stderr
    for bad in ("1x", "1.5h", "", "0", "-5", "99999999999h"):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, MLGO_HOST_OPEN_TIMEOUT=bad))
        assert proc.returncode == 1, bad
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"MLGO_HOST_OPEN_TIMEOUT='{bad}'" in lines[0], proc.stderr
    _assert_clean(channel_tmp, [])


def test_host_refuses_a_timeout_it_cannot_read(tmp_path: Path, proxy_host: str) -> None:
    proc = subprocess.run([proxy_host, str(tmp_path / "ch"), "1h", "0"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "'1h'" in proc.stderr


def test_launcher_policy_mismatch_says_to_set_the_variable_when_printing(
        tmp_path: Path, channel_tmp: Path, proxy_host: str) -> None:
    """A launcher printed without MLGO_REGALLOC_POLICY serves `proxy`; a compile asking for
    another policy is refused with the command that makes the right launcher (issue 17)."""
    for driver in launcher.DRIVERS:
        native = launcher.launcher_for(driver)
        src = tmp_path / "leaf.c"
        src.write_text(SOURCES["leaf.c"])
        proc = subprocess.run([native, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MLGO_REGALLOC_POLICY="regalloc"))
        assert proc.returncode == 1
        assert (f"`MLGO_REGALLOC_POLICY=regalloc mlgo-{driver} --print-launcher`"
                in proc.stderr), proc.stderr
