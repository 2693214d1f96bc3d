"""What a hostile tester found in serving and its tools: a policy whose bucket file was cut in half
still served (other decisions), a policy path that wrote CMake code into `mlgo cmake-flags`'
output, `mlgo summary` on odd digits, /dev/zero and FIFOs, an empty MLGO_REGALLOC_POLICY that
served the current directory, and channel directories a killed mlgo-clang left for ever."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import SOURCES
from test_networks import balanced_inlining_params, inlining_specs, make_vocab

from mlgo.policies.policy_dir import PolicyFormatError, load_policy, read_policy_json, save_policy
from mlgo.policies.shipped import resolve, shipped_names
from mlgo.problems.inlining.network import InliningNetwork, InliningNetworkConfig
from mlgo.serving import launcher

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_POLICY_VARIABLES = ("MLGO_REGALLOC_POLICY", "MLGO_INLINE_POLICY", "MLGO_FALLBACK", "MLGO_TMPDIR")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache for the module (the native launcher is built once), and no policy variables
    from the caller's environment."""
    saved = {k: os.environ.pop(k) for k in ("MLGO_CACHE_DIR", *_POLICY_VARIABLES)
             if k in os.environ}
    os.environ["MLGO_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("MLGO_CACHE_DIR")
    os.environ.update(saved)


@pytest.fixture(scope="module")
def default_program() -> str:
    """The native mlgo-clang made with MLGO_REGALLOC_POLICY unset (serving default-rule)."""
    return launcher.launcher_for("clang")


def _mlgo(*args: str, timeout: float = 60, env: dict | None = None,
          cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlgo.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlgo: error: "), res.stderr
    return lines[0]


# -- a policy directory: every file it reads is covered by a digest ---------------------------

@pytest.fixture(scope="module")
def inlining_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = InliningNetwork(inlining_specs(), InliningNetworkConfig(hidden_sizes=(16,)),
                          make_vocab(np.random.default_rng(0)))
    return save_policy(tmp_path_factory.mktemp("p") / "policy", net, balanced_inlining_params(net, 1))


def _cut_in_half(path: Path, at_line_end: bool) -> None:
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes(data[: data.index(b"\n", half) + 1] if at_line_end else data[:half])


@pytest.mark.parametrize("at_line_end", [True, False])
def test_a_cut_bucket_file_is_refused_naming_it(tmp_path: Path, inlining_policy: Path,
                                               at_line_end: bool) -> None:
    """Half a bucket file still parses and moves every quantile: the digest in policy.json
    catches it, wherever the cut falls."""
    policy = tmp_path / "p"
    shutil.copytree(inlining_policy, policy)
    bucket = policy / "vocab" / "callee_users.buckets"
    _cut_in_half(bucket, at_line_end)
    with pytest.raises(PolicyFormatError) as e:
        load_policy(policy)
    assert str(e.value) == (f"{bucket}: does not match its digest in policy.json (corrupt, "
                            "truncated or half-copied policy)")
    # what a user sees: making an inliner plugin from it stops at the damaged file
    assert _one_error_line(_mlgo("plugin", str(policy))) == f"mlgo: error: {e.value}"


def _digested(policy: Path) -> set[str]:
    """The files of `policy` whose digests its policy.json records."""
    doc = read_policy_json(policy)
    return {"params.npy"} | {f"vocab/{name}" for name in doc.get("vocab_sha256", {})}


def test_every_file_read_is_in_the_digests(inlining_policy: Path) -> None:
    files = {str(p.relative_to(inlining_policy)) for p in inlining_policy.rglob("*")
             if p.is_file() and p.name != "policy.json"}
    network, _, _ = load_policy(inlining_policy)
    assert _digested(inlining_policy) == files
    assert {f"vocab/{name}.buckets" for name in network.vocab} | {"params.npy"} == files


def test_a_missing_bucket_file_is_named(tmp_path: Path, inlining_policy: Path) -> None:
    policy = tmp_path / "p"
    shutil.copytree(inlining_policy, policy)
    (policy / "vocab" / "callee_users.buckets").unlink()
    with pytest.raises(PolicyFormatError, match=r"vocab/callee_users\.buckets: missing"):
        load_policy(policy)


def _as_saved_before_digests(policy: Path) -> None:
    doc = json.loads((policy / "policy.json").read_text())
    del doc["vocab_sha256"]
    (policy / "policy.json").write_text(json.dumps(doc, indent=1) + "\n")


def test_directory_saved_before_digests_loads_and_a_cut_inside_a_line_is_refused(
        tmp_path: Path, inlining_policy: Path) -> None:
    policy = tmp_path / "p"
    shutil.copytree(inlining_policy, policy)
    _as_saved_before_digests(policy)
    network, params, _ = load_policy(policy)
    assert network.num_params == params.size
    bucket = policy / "vocab" / "callee_users.buckets"
    _cut_in_half(bucket, at_line_end=False)
    with pytest.raises(PolicyFormatError, match=r"callee_users\.buckets: ends inside a line"):
        load_policy(policy)


def test_shipped_policy_has_every_file_digested() -> None:
    """Re-saved by save_policy (the shipped regalloc policy has no vocab: nothing to add)."""
    assert "inlining-oz" in shipped_names()
    policy = Path(resolve("inlining-oz"))
    files = {str(p.relative_to(policy)) for p in policy.rglob("*")
             if p.is_file() and p.name != "policy.json"}
    assert _digested(policy) == files
    network, _, _ = load_policy(policy)
    assert len(files) == 1 + len(network.vocab)


# -- mlgo cmake-flags: quoted for CMake, or refused ------------------------------------------

def _cmake_values(text: str, tmp_path: Path, names: list[str]) -> dict[str, str]:
    """What real CMake reads from an initial-cache file (its set() commands, run as a script)."""
    script = tmp_path / "read.cmake"
    script.write_text(text + "".join(f'message("{n}=[${{{n}}}]")\n' for n in names))
    res = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(line.split("=", 1) for line in res.stderr.splitlines() if "=[" in line)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_file_keeps_odd_but_safe_values_exactly_and_refuses_code(tmp_path: Path) -> None:
    """Real CMake reads back every value as given; a policy path with a newline in it is
    refused instead of ending the comment that names it and running as CMake code."""
    from mlgo.serving.cmake import CMakeFlagsError, initial_cache

    with pytest.raises(CMakeFlagsError):
        initial_cache("/c/lib.so", 'x\nset(CMAKE_C_COMPILER "/tmp/evil" CACHE FILEPATH "" FORCE)',
                      {"C": "clang", "CXX": "clang++"})

    cc = '/opt/my "tools"/$HOME/${CC}#clang'
    text = initial_cache("/cache/p-1/libmlgo_inliner.so", 'runs/"best" ${X}', {"C": cc, "CXX": cc})
    got = _cmake_values(text, tmp_path, ["CMAKE_C_COMPILER", "CMAKE_C_FLAGS", "CMAKE_EXE_LINKER_FLAGS"])
    assert got == {"CMAKE_C_COMPILER": f"[{cc}]",
                   "CMAKE_C_FLAGS": "[-fpass-plugin=/cache/p-1/libmlgo_inliner.so]",
                   "CMAKE_EXE_LINKER_FLAGS": "[-fuse-ld=lld -Wl,--load-pass-plugin="
                                             "/cache/p-1/libmlgo_inliner.so]"}


@pytest.mark.parametrize("policy,plugin,cc,message", [
    ("runs/x\nmessage(FATAL_ERROR injected)\n#", "/c/lib.so", "clang",
     r"policy 'runs/x\nmessage(FATAL_ERROR injected)\n#': cannot write '\n' into a CMake file "
     "safely: it is not printable"),
    ("p", "/c/lib.so", "/bin/clang\r", r"C compiler '/bin/clang\r': cannot write '\r'"),
    ("p", "/c/lib.so", "clang;-O0", "C compiler 'clang;-O0': cannot write ';' into a CMake file "
     "safely: CMake would read the value as a list"),
    ("p", "/c/lib.so", "C:\\clang", r"C compiler 'C:\\clang': cannot write '\\'"),
    ("p", "/my cache/lib.so", "clang", "inliner plugin '/my cache/lib.so': cannot write ' '"),
    ("p", "/c,d/lib.so", "clang", "inliner plugin '/c,d/lib.so': cannot write ','"),
    ("p", "/c/$(rm -rf x)/lib.so", "clang", "inliner plugin '/c/$(rm -rf x)/lib.so': cannot "
     "write '$'"),
])
def test_cmake_file_refuses_what_cannot_be_quoted(policy: str, plugin: str, cc: str,
                                                  message: str) -> None:
    from mlgo.serving.cmake import CMakeFlagsError, initial_cache

    with pytest.raises(CMakeFlagsError) as e:
        initial_cache(plugin, policy, {"C": cc, "CXX": "clang++"})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# -- mlgo summary: strict digits, bounded lines, regular files only -----------------------------

_GOOD = "regalloc\tregalloc\t-\t12\t-\t-\ninlining\tinlining-oz\tm.c\t7\t3\t-\n"


@pytest.mark.parametrize("line,why", [
    ("regalloc\tp\t-\t1²\t-\t-", "decision counts are not whole numbers"),
    ("inlining\tp\tm\t3\t٣\t-", "decision counts are not whole numbers"),
    ("regalloc\tp\t-\t" + "9" * 5000 + "\t-\t-", "decision counts are not whole numbers"),
    ("regalloc\tp\t-\t1\t-\t" + "x" * 70000, "longer than 65536 bytes"),
])
def test_summary_refuses_odd_lines_in_one_line(tmp_path: Path, line: str, why: str) -> None:
    summary = tmp_path / "s.tsv"
    summary.write_text(_GOOD + _GOOD)
    res = _mlgo("summary", str(summary))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1:] == [
        "inlining  inlining-oz  compile     2         14    6",
        "regalloc  regalloc     compile     2         24    -"]
    summary.write_text(_GOOD + line + "\n")
    err = _one_error_line(_mlgo("summary", str(summary)))
    assert err.startswith(f"mlgo: error: {summary}:3: not a decision summary line ({why}")


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory"])
def test_summary_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """/dev/zero used to be read until memory ran out, and a FIFO with no writer blocked."""
    path = Path(kind) if kind.startswith("/") else tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    err = _one_error_line(_mlgo("summary", str(path), timeout=30))
    assert err == (f"mlgo: error: {path}: not a regular file (a decision summary is the file "
                   "MLGO_DECISION_SUMMARY named for a build)")


# -- an empty MLGO_REGALLOC_POLICY is unset (the default), never the current directory --------

def test_empty_regalloc_policy_is_the_default_not_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_program: str) -> None:
    """As a path "" is ".": inside a policy directory the empty variable used to serve that
    policy. Now, empty is unset for the Python side (default-rule) and for a native program
    (whatever it was made for), as it already was for MLGO_INLINE_POLICY."""
    here = tmp_path / "a-policy"
    shutil.copytree(resolve("regalloc"), here)
    monkeypatch.chdir(here)
    monkeypatch.setenv("MLGO_REGALLOC_POLICY", "")
    config = launcher.resolve_config("clang")
    assert config.regalloc_policy == config.regalloc_label == "default-rule"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    printed = subprocess.run([str(BIN / "mlgo-clang"), "--print-launcher"], capture_output=True,
                             text=True, timeout=300, cwd=here, env=env)
    assert printed.returncode == 0 and printed.stdout.strip() == default_program, printed.stderr
    src, summary = tmp_path / "pressure.c", tmp_path / "summary.tsv"
    src.write_text(SOURCES["pressure.c"])
    channels = tmp_path / "channels"
    channels.mkdir()
    served = subprocess.run([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")],
                            capture_output=True, text=True, timeout=120, cwd=here,
                            env={**env, "MLGO_DECISION_SUMMARY": str(summary),
                                 "MLGO_TMPDIR": str(channels)})
    assert served.returncode == 0 and served.stderr == "", served.stderr
    [line] = summary.read_text().splitlines()
    assert line.startswith("regalloc\tdefault-rule\t-\t")
    # and `mlgo plugin ""` names no directory either
    err = _one_error_line(_mlgo("plugin", "", cwd=here))
    assert err.startswith("mlgo: error: the inlining policy is an empty name: give a built-in")


# -- channel directories a kill -9 left are removed by later compiles -------------------------

def _wait_for(path: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the compiler never started"
        time.sleep(0.05)
    return int(path.read_text())


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_channel_dirs_of_a_killed_launcher_are_removed_by_the_next(
        tmp_path: Path, default_program: str) -> None:
    channels = tmp_path / "channels"
    channels.mkdir()
    slow = tmp_path / "slow-clang"
    slow.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid.tmp\nmv {tmp_path}/pid.tmp "
                    f"{tmp_path}/pid\nexec sleep 60\n")
    slow.chmod(0o755)
    src = tmp_path / "pressure.c"
    src.write_text(SOURCES["pressure.c"])
    env = {**os.environ, "MLGO_TMPDIR": str(channels)}
    killed = subprocess.Popen([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "k.o")],
                              env={**env, "MLGO_CLANG": str(slow)})
    compiler = _wait_for(tmp_path / "pid", killed)
    killed.kill()
    killed.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _running(compiler) and time.monotonic() < deadline:
        time.sleep(0.05)
    [stale] = channels.iterdir()
    assert stale.name.startswith(f"mlgo-clang-{killed.pid}-")
    assert sorted(p.name for p in stale.iterdir()) == ["channel.in", "channel.out"]

    dead = killed.pid  # reaped above: no process has it (the next pid is rarely this one)
    keep = {
        "live": channels / f"mlgo-clang-{os.getpid()}-aaaaaa",  # this process runs
        "locked": channels / f"mlgo-clang-{dead}-bbbbbb",  # a live launcher elsewhere holds it
        "other-name": channels / f"mlgo-clang-{dead}-cc",
        "foreign": channels / f"mlgo-clang-{dead}-dddddd",  # someone else's
    }
    for d in keep.values():
        d.mkdir()
        os.mkfifo(d / "channel.in")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "file").write_text("kept")
    link = channels / f"mlgo-clang-{dead}-eeeeee"
    link.symlink_to(target)
    lock = os.open(keep["locked"], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.geteuid() == 0:
        os.chown(keep["foreign"], 65534, 65534)
    else:
        keep.pop("foreign")
        shutil.rmtree(channels / f"mlgo-clang-{dead}-dddddd")
    try:
        res = subprocess.run([default_program, "-O2", "-c", str(src), "-o", str(tmp_path / "p.o")],
                             capture_output=True, text=True, timeout=120, env=env)
    finally:
        os.close(lock)
    assert res.returncode == 0, res.stderr
    assert not stale.exists()
    assert sorted(channels.iterdir()) == sorted([*keep.values(), link])
    assert all((d / "channel.in").exists() for d in keep.values())
    assert (target / "file").read_text() == "kept"
