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
from mlgo.serving import codegen, host

BIN = Path(sys.executable).parent
MLGO_CLANG = str(BIN / "mlgo-clang")


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


def test_wrapper_matches_interactive_mode(tmp_path: Path, channel_tmp: Path,
                                          proxy_host: str) -> None:
    """Same objects and decisions as serving eviction_cost_proxy from Python, and the same
    spill cost as mlgo.env measures for the corpus module."""
    corpus = Corpus.load(make_small_corpus(tmp_path / "c"))
    problem = get_problem("regalloc")
    heuristic = problem.heuristic("proxy")
    total_decisions = 0
    for module in corpus.modules:
        work = tmp_path / module.name.replace("/", "_")
        work.mkdir()
        args = module.compile_args(extra=problem.measurement_flags(work, cc1=False))
        log = work / "host-decisions.txt"
        proc = subprocess.run([MLGO_CLANG, *args, "-o", str(work / "wrapped.o")],
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


def test_make_parallel_equals_serial(tmp_path: Path, channel_tmp: Path, proxy_host: str) -> None:
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
    make = ["make", "-s", "-C", str(project), f"CC={MLGO_CLANG}"]
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


def test_failed_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path, proxy_host: str) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undeclared; }\n")
    before = _host_processes()
    proc = subprocess.run([MLGO_CLANG, "-O2", "-c", str(bad), "-o", str(tmp_path / "bad.o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "undeclared" in proc.stderr
    _assert_clean(channel_tmp, before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compile_leaves_nothing(tmp_path: Path, channel_tmp: Path,
                                            proxy_host: str, sig: signal.Signals) -> None:
    """A compiler that is still running when the wrapper is interrupted gets the signal; the
    wrapper cleans up and dies of the same signal."""
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\necho started > {tmp_path}/started\nexec sleep 60\n")
    slow.chmod(0o755)
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    before = _host_processes()
    proc = subprocess.Popen([MLGO_CLANG, "-O2", "-c", str(src), "-o", str(tmp_path / "x.o")],
                            env=dict(os.environ, MLGO_CLANG=str(slow)))
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert set(_host_processes()) - set(before)  # the host is waiting for the compiler
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    _assert_clean(channel_tmp, before)


def test_pass_through_invocations_run_plain_clang(tmp_path: Path, channel_tmp: Path) -> None:
    # A policy name that does not exist: any attempt to serve it would fail loudly.
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    srcs = _write_sources(tmp_path / "src")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([MLGO_CLANG, *args], capture_output=True, text=True, env=env,
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


def test_fallback_only_when_asked(tmp_path: Path, channel_tmp: Path) -> None:
    src = tmp_path / "leaf.c"
    src.write_text(SOURCES["leaf.c"])
    env = dict(os.environ, MLGO_REGALLOC_POLICY="no-such-policy")
    cmd = [MLGO_CLANG, "-O2", "-c", str(src), "-o", str(tmp_path / "leaf.o")]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and not (tmp_path / "leaf.o").exists()
    assert "error" in refused.stderr
    allowed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env=dict(env, MLGO_FALLBACK="1"))
    assert allowed.returncode == 0 and (tmp_path / "leaf.o").exists()
    assert "warning" in allowed.stderr and "MLGO_FALLBACK=1" in allowed.stderr


def test_inline_policy_adds_the_plugin(tmp_path: Path, channel_tmp: Path, proxy_host: str) -> None:
    from mlgo.serving.plugin import plugin_for

    plugin_for("cost-threshold")  # built (or found) outside the timed compile
    src = tmp_path / "calls.c"
    src.write_text(SOURCES["calls.c"])
    log = tmp_path / "inline-decisions.txt"
    proc = subprocess.run([MLGO_CLANG, "-Oz", "-c", str(src), "-o", str(tmp_path / "c.o")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MLGO_INLINE_POLICY="cost-threshold",
                                   MLGO_PLUGIN_DECISION_LOG=str(log)))
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().strip()
