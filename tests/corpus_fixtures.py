"""Small hand-written C modules compiled into a corpus, for tests that need a real compiler, the
marks that skip a test when a tool it runs directly is not installed and that run a test on each
supported LLVM version, and the helpers the mlgo-clang tests share.

The LLVM tools a test runs directly are the chosen version's (MLGO_LLVM_VERSION, else the rule of
mlgo_base/toolchain.py): `llvm_tool("clang")` is clang-19 or clang-22, so the suite passes on a
machine with either version alone.

The fixtures built on these (a private cache, the small corpus, the LLVM version of a test) are
in tests/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgo_base import toolchain
from mlgo_base.errors import ToolchainError

SOURCES = {
    "calls.c": r"""
static int sq(int x) { return x * x; }
static int cube(int x) { return sq(x) * x; }
int sum_squares(int n) { int s = 0; for (int i = 0; i < n; i++) s += sq(i) + cube(i); return s; }
int twice(int n) { return sum_squares(n) + sum_squares(n + 1); }
""",
    "pressure.c": r"""
double mix(const double *a, const double *b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  double t0 = 1, t1 = 1, t2 = 1, t3 = 1, t4 = 1, t5 = 1, t6 = 1, t7 = 1;
  for (int i = 0; i + 8 <= n; i += 8) {
    s0 += a[i] * b[i]; s1 += a[i+1] * b[i+1]; s2 += a[i+2] * b[i+2]; s3 += a[i+3] * b[i+3];
    s4 += a[i+4] * b[i+4]; s5 += a[i+5] * b[i+5]; s6 += a[i+6] * b[i+6]; s7 += a[i+7] * b[i+7];
    t0 *= a[i] + s7; t1 *= a[i+1] + s6; t2 *= a[i+2] + s5; t3 *= a[i+3] + s4;
    t4 *= b[i] + s3; t5 *= b[i+1] + s2; t6 *= b[i+2] + s1; t7 *= b[i+3] + s0;
  }
  return s0+s1+s2+s3+s4+s5+s6+s7 + t0*t1*t2*t3*t4*t5*t6*t7;
}
long hash(const char *s) {
  long h = 5381, g = 7, k = 11, m = 13, p = 17, q = 19, r = 23, u = 29, v = 31, w = 37;
  while (*s) { h = h * 33 + *s; g ^= h >> 3; k += g * 5; m -= k; p ^= m << 1; q += p;
               r ^= q; u += r * 3; v ^= u; w += v; s++; }
  return h ^ g ^ k ^ m ^ p ^ q ^ r ^ u ^ v ^ w;
}
""",
    "leaf.c": "int leaf(int x) { return x + 1; }\n",
    "strings.c": r"""
#include <stddef.h>
static size_t len(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }
static const char *skip(const char *s) { while (is_space(*s)) s++; return s; }
int count_words(const char *s) {
  int n = 0;
  for (s = skip(s); *s; s = skip(s)) { n++; while (*s && !is_space(*s)) s++; }
  return n;
}
size_t total_len(const char **v, int n) { size_t t = 0; for (int i = 0; i < n; i++) t += len(skip(v[i])); return t; }
""",
    "tree.c": r"""
#include <stdlib.h>
struct node { int key; struct node *l, *r; };
static struct node *mk(int k) { struct node *n = malloc(sizeof *n); n->key = k; n->l = n->r = 0; return n; }
static struct node *ins(struct node *t, int k) {
  if (!t) return mk(k);
  if (k < t->key) t->l = ins(t->l, k); else t->r = ins(t->r, k);
  return t;
}
static int depth(const struct node *t) { if (!t) return 0; int a = depth(t->l), b = depth(t->r); return 1 + (a > b ? a : b); }
static void drop(struct node *t) { if (t) { drop(t->l); drop(t->r); free(t); } }
int tree_depth(const int *keys, int n) { struct node *t = 0; for (int i = 0; i < n; i++) t = ins(t, keys[i]); int d = depth(t); drop(t); return d; }
""",
    "mathx.c": r"""
static double sq(double x) { return x * x; }
static double poly(double x) { return sq(x) * 3 + x * 2 + 1; }
static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }
double eval_all(const double *v, int n) { double s = 0; for (int i = 0; i < n; i++) s += clamp(poly(v[i]), -1e6, 1e6); return s; }
double norm2(const double *v, int n) { double s = 0; for (int i = 0; i < n; i++) s += sq(v[i]); return s; }
""",
}


def needs_tools(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every one of `tools` (e.g. "valgrind", "bear") is on PATH."""
    return pytest.mark.skipif(not all(shutil.which(t) for t in tools),
                              reason=f"{', '.join(tools)} needed")


def llvm_tool(name: str) -> str:
    """Path of LLVM tool `name` ("clang", "opt", "llvm-dis" ...) of the chosen version."""
    return toolchain.locate(name, override=False)


def _has_llvm_tool(name: str) -> bool:
    try:
        llvm_tool(name)
    except ToolchainError:
        return False
    return True


def needs_llvm(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every one of the chosen LLVM version's `tools` (e.g. "opt", "llvm-dis") is
    installed (checked when the tests are collected)."""
    major = toolchain.llvm_major()
    return pytest.mark.skipif(not all(_has_llvm_tool(t) for t in tools),
                              reason=f"{', '.join(f'{t}-{major}' for t in tools)} needed")


@contextlib.contextmanager
def on_llvm(major: int) -> Iterator[None]:
    """MLGO_LLVM_VERSION set to `major` inside (a module-scoped fixture that compiles for the
    `llvm_major` of tests/conftest.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(toolchain.VERSION_VARIABLE, str(major))
        yield


def _version_param(major: int) -> object:
    return pytest.param(major, id=f"llvm{major}", marks=pytest.mark.skipif(
        not toolchain.is_installed(major),
        reason=f"clang-{major} is not installed: this run covers LLVM "
        f"{', '.join(str(m) for m in toolchain.SUPPORTED_MAJORS if toolchain.is_installed(m))}"
        f" only ({toolchain.install_hint(major)})"))


# A test (or, as `pytestmark`, a file) marked ON_EACH_LLVM runs once per supported LLVM version,
# with MLGO_LLVM_VERSION set to it (the `llvm_version` fixture of tests/conftest.py) and the
# module-scoped fixtures that compile (the `corpus` ...) built per version; a version that is not
# installed is a skip that names it.
ON_EACH_LLVM = [
    pytest.mark.parametrize("llvm_major", [_version_param(m) for m in toolchain.SUPPORTED_MAJORS],
                            indirect=True),
    pytest.mark.usefixtures("llvm_version"),
]


def on_each_llvm(test):  # noqa: ANN001, ANN201 - a decorator keeps the test's signature
    """ON_EACH_LLVM as a decorator for one test."""
    for mark in reversed(ON_EACH_LLVM):
        test = mark(test)
    return test


def make_small_corpus(root: Path, opt: str = "-Oz", sources: dict[str, str] | None = None) -> Path:
    """root/corpus with one module per source above, or per `sources` (project 'small'),
    emitted as the chosen clang emits it with `clang OPT -c` (-Oz: what inlining-for-size
    serves), recording its LLVM version."""
    src = root / "src"
    corpus = root / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    (corpus / "small").mkdir(parents=True, exist_ok=True)
    names = []
    for fname, text in (sources or SOURCES).items():
        (src / fname).write_text(text)
        name = "small/" + fname
        subprocess.run([llvm_tool("clang"), opt, "-Xclang", "-disable-llvm-passes", "-emit-llvm",
                        "-c", str(src / fname), "-o", str(corpus / (name + ".bc"))], check=True)
        (corpus / (name + ".cmd")).write_bytes(b"\0".join([b"-c", opt.encode()]))
        names.append(name)
    (corpus / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names, "opt_level": opt,
                    "llvm_version": toolchain.llvm_major()}))
    return corpus


def _inlining_source(seed: int) -> str:
    """Helpers of 1 to 20 statements, each called from several entry points: at -Oz the
    default inliner takes some call sites and leaves most (about a quarter inlined)."""
    rng = random.Random(seed)
    out, helpers = [], []
    for h in range(8):
        body = "".join(f"  x = x * {rng.randint(3, 97)} + (x >> {rng.randint(1, 7)}) ^ "
                       f"{rng.randint(1, 999)};\n"
                       for _ in range(rng.choice([1, 1, 2, 3, 5, 8, 12, 20])))
        storage = rng.choice(["static ", "static ", ""])
        out.append(f"{storage}int h{seed}_{h}(int x) {{\n{body}  return x;\n}}")
        helpers.append(f"h{seed}_{h}")
    for c in range(10):
        calls = " + ".join(f"{rng.choice(helpers)}(a + {k})" for k in range(rng.randint(3, 6)))
        out.append(f"int api{seed}_{c}(int a) {{ return {calls}; }}")
    return "\n".join(out) + "\n"


def _pressure_source(seed: int) -> str:
    """Loops keeping 14 to 24 values live across a call: the greedy allocator evicts often."""
    rng = random.Random(seed)
    out = ["long ext(long);"]
    for f in range(4):
        n = rng.randint(14, 24)
        decl = ", ".join(f"a{i} = {rng.randint(1, 99)}" for i in range(n))
        upd = " ".join(f"a{i} = a{i} * {rng.randint(3, 9)} + a{(i + rng.randint(1, n - 1)) % n} "
                       f"^ v[k + {i % 5}];" for i in range(n))
        ret = " + ".join(f"a{i}" for i in range(n))
        out.append(f"long f{seed}_{f}(const long *v, int m) {{\n  long {decl};\n"
                   f"  for (int k = 0; k < m; k++) {{ {upd} if (a0 & 1) a1 += ext(a2); }}\n"
                   f"  return {ret};\n}}")
    return "\n".join(out) + "\n"


def generated_source(kind: str, seed: int) -> str:
    """Generated module `seed` of make_generated_corpus's `kind`, as C source."""
    return {"inlining": _inlining_source, "regalloc": _pressure_source}[kind](seed)


def make_generated_corpus(root: Path, kind: str, modules: int) -> Path:
    """root/corpus with `modules` generated C modules (project 'gen') for learning tests:
    kind "inlining" (many call sites, built for -Oz) or "regalloc" (register pressure, -O2).
    Deterministic: module i is always the same source."""
    make, opt = {"inlining": (_inlining_source, "-Oz"), "regalloc": (_pressure_source, "-O2")}[kind]
    src, corpus = root / "src", root / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    (corpus / "gen").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(modules):
        name = f"gen/{kind}{i}.c"
        (src / f"{kind}{i}.c").write_text(make(i))
        subprocess.run([llvm_tool("clang"), opt, "-Xclang", "-disable-llvm-passes", "-emit-llvm",
                        "-c", str(src / f"{kind}{i}.c"), "-o", str(corpus / (name + ".bc"))],
                       check=True)
        (corpus / (name + ".cmd")).write_bytes(b"\0".join([b"-c", opt.encode()]))
        names.append(name)
    (corpus / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names, "opt_level": opt,
                    "llvm_version": toolchain.llvm_major()}))
    return corpus


REPO = Path(__file__).resolve().parents[1]


def run_mlgo(*args: str, timeout: float = 120, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    """`mlgo ARGS` in a process of its own (this checkout's code), its output captured."""
    return subprocess.run([sys.executable, "-m", "mlgo.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def new_regalloc_policy(path: Path, params=None) -> Path:
    """A regalloc policy directory of a freshly initialised network (or of `params`)."""
    from mlgo.policies.policy_dir import save_policy
    from mlgo.problems import get_problem

    problem = get_problem("regalloc")
    net = problem.build_network(problem.header(), None)
    return save_policy(path, net, net.init_params(0) if params is None else params,
                       {"algorithm": "bc"})


# -- mlgo-clang (tests/test_wrapper.py, tests/test_wrapper_faults.py) -----------------------------

# The Python entry point only finds (or builds) the native program and executes it; behaviour
# tests run through both doors: `mlgo-clang` and the program `--print-launcher` names.
WRAPPERS = ("python", "native")


def without_mlgo_settings() -> dict[str, str]:
    """This process's environment without mlgo's variables (policies, channels, logs), but with
    the LLVM version the test runs on and the cache it uses (so a program built here is the one
    the test process finds)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLGO_") or k == "MLGO_CACHE_DIR"}
    env[toolchain.VERSION_VARIABLE] = str(toolchain.llvm_major())
    return env


def wrapper_command(kind: str, driver: str = "clang") -> str:
    """The command to use as CC: the Python entry point, or the native program made for the
    current environment (MLGO_REGALLOC_POLICY etc.)."""
    if kind == "python":
        return str(Path(sys.executable).parent / f"mlgo-{driver}")
    from mlgo.serving import launcher

    return launcher.launcher_for(driver)


def assert_channels_clean(channel_dir: Path) -> None:
    assert list(channel_dir.iterdir()) == [], "FIFOs or channel directories left behind"
