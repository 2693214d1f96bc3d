"""What a regalloc policy does to real programs: several programs from Debian source packages,
each compiled from the package's own compile commands (its -O2 flags, as recorded by
`mlgo corpus debian` in the build cache) three ways: plain clang-19 (the default eviction
advisor), through mlgo-clang's native launcher with MLGO_REGALLOC_POLICY=proxy, and with
MLGO_REGALLOC_POLICY=regalloc (the shipped policy), plus any policy given with --policy.

Each build runs a fixed, deterministic, CPU-bound workload under callgrind. Reported per program
and variant: callgrind's instruction count (Ir, summed over the workload's runs) and the
block-frequency-weighted spill cost summed over the build's objects' regalloc remarks (as
mlgo/problems/regalloc/problem.py measures it). The workload's output must be the same for
every variant and equal to the known value below; then the correlation between spill-cost
change and instruction change over all (program, policy) pairs is printed.

Needs the build cache: mlgo corpus debian lua5.4 bzip2 zlib lz4 jq pcre2 libzstd expat \
libyaml -o CORPUS
Usage: python benchmarks/regalloc_programs.py [--program bzip2]... [--policy DIR]...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from regalloc_callgrind import PROGRAM as LUA_PROGRAM  # the same Lua workload

from mlgo.compiler.measure import parse_regalloc_remarks
from mlgo.serving.launcher import launcher_for
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError

BUILD_CACHE = Path.home() / ".cache" / "mlgo" / "debian" / "build"
REMARKS = ["-fsave-optimization-record=yaml", "-foptimization-record-passes=regalloc"]
# Flags of a recorded compile command that name its outputs; replaced by ours.
DROP_WITH_ARG = {"-o", "-MF", "-MT", "-MQ"}
DROP = {"-c", "-MD", "-MMD", "-MP"}


class BenchError(SystemExit):
    """One clear line naming the program and the step that failed."""

    def __init__(self, program: str, step: str, detail: str) -> None:
        super().__init__(f"{program}: {step} failed: {detail.strip()[-1500:]}")


def words(n_bytes: int, seed: int = 12345) -> bytes:
    """Deterministic text-like data (a fixed LCG over a small vocabulary): compressible, but not
    trivially, so compressors do real work."""
    vocab = [b"the", b"register", b"allocator", b"spill", b"reload", b"copy", b"evict", b"loop",
             b"function", b"value", b"live", b"range", b"weight", b"0x7f3a", b"12345", b"\n",
             b"interference", b"block", b"frequency", b"cost", b"{", b"}", b";", b"=", b"+"]
    x, out, size = seed, [], 0
    while size < n_bytes:
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        w = vocab[(x >> 33) % len(vocab)]
        out.append(w + (b"" if w == b"\n" else b" "))
        size += len(out[-1])
    return b"".join(out)[:n_bytes]


@dataclass
class Runner:
    """Runs the program's steps under callgrind, summing Ir."""

    program: str
    native: bool = False  # --smoke: run without callgrind (to check the recipes quickly)
    ir: int = 0
    # Where to keep callgrind's output files (one per step, symbols not demangled), for
    # per-function counts; None: not kept.
    profile_dir: Path | None = None
    callgrind_args: tuple[str, ...] = ()
    steps: int = 0

    def __call__(self, argv: list[str], stdin: bytes = b"", step: str = "run") -> bytes:
        out = "/dev/null"
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = str(self.profile_dir / f"step{self.steps}.cg")
        self.steps += 1
        cmd = argv if self.native else [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--demangle=no",
            *self.callgrind_args, *argv]
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=1800)
        if r.returncode != 0:
            raise BenchError(self.program, f"{step} ({shlex.join(argv)})",
                             f"exit {r.returncode}: {r.stderr.decode(errors='replace')}")
        if not self.native:
            m = re.search(rb"Collected\s*:\s*(\d+)", r.stderr)
            if not m:
                raise BenchError(self.program, step, "no 'Collected' count in callgrind's output")
            self.ir += int(m.group(1))
        return r.stdout


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def roundtrip(run: Runner, compress: list[str], decompress: list[str], data: bytes) -> str:
    packed = run(compress, data, "compress")
    unpacked = run(decompress, packed, "decompress")
    if unpacked != data:
        raise BenchError(run.program, "decompress", "round trip does not give the input back")
    return f"{len(data)} -> {len(packed)} bytes, sha256 {sha(packed)}, round trip ok"


# Workloads: each takes the built program and a scratch directory, runs its steps through
# `run`, and returns a short summary that must match KNOWN.


def lua_workload(exe: Path, work: Path, run: Runner) -> str:
    return run([str(exe), "-e", LUA_PROGRAM]).decode().strip()


def bzip2_workload(exe: Path, work: Path, run: Runner) -> str:
    return roundtrip(run, [str(exe), "-9", "-c"], [str(exe), "-d", "-c"], words(600_000))


def zlib_workload(exe: Path, work: Path, run: Runner) -> str:
    return roundtrip(run, [str(exe), "-9"], [str(exe), "-d"], words(1_000_000))


def lz4_workload(exe: Path, work: Path, run: Runner) -> str:
    return roundtrip(run, [str(exe), "-9", "-c"], [str(exe), "-d", "-c"], words(2_000_000))


def jq_workload(exe: Path, work: Path, run: Runner) -> str:
    data = work / "in.json"
    items = [{"id": i, "name": f"n{(i * 7919) % 1000}", "v": (i * 31) % 977, "tags": ["a", "b"][: i % 3]}
             for i in range(8000)]
    data.write_text(json.dumps(items))
    flt = ("map(select(.v % 3 == 0) | {name, w: (.v * .id % 1013), t: (.tags | length)}) "
           "| group_by(.name) | map({k: .[0].name, n: length, s: (map(.w) | add)}) "
           "| sort_by(-.s) | .[:5], (map(.s) | add)")
    return sha(run([str(exe), "-c", flt, str(data)]))


def pcre2_workload(exe: Path, work: Path, run: Runner) -> str:
    # --no-jit: the JIT's generated code would not go through the register allocator.
    data = work / "in.txt"
    data.write_bytes(words(300_000))
    out = run([str(exe), "--no-jit", "-o", "-e", r"(re\w*|sp\w+)\s+(\w+)\s+\2",
               "-e", r"\b(\d+)\b.*?\1", "-e", r"(?i)(e\w)\w*\1", str(data)])
    return f"{len(out.splitlines())} matches, sha256 {sha(out)}"


def zstd_workload(exe: Path, work: Path, run: Runner) -> str:
    return roundtrip(run, [str(exe), "-q", "-9", "-c"], [str(exe), "-q", "-d", "-c"],
                     words(1_000_000))


def expat_workload(exe: Path, work: Path, run: Runner) -> str:
    """xmlwf checks a generated document and writes it in canonical form (-d)."""
    parts = ['<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY e "spill &amp; reload">]>\n<r>']
    for i in range(6000):
        parts.append(f'<item id="i{i}" w="{(i * 7919) % 1000}"><name>n{i % 97}</name>'
                     f'<v a="{i % 13}">&e; {i * 31 % 977}</v><![CDATA[x<{i}>]]><!-- c{i} --></item>\n')
    parts.append("</r>\n")
    (work / "doc.xml").write_text("".join(parts))
    (work / "out").mkdir()
    run([str(exe), "-d", str(work / "out"), str(work / "doc.xml")])
    canonical = (work / "out" / "doc.xml").read_bytes()
    return f"{len(canonical)} bytes canonical, sha256 {sha(canonical)}"


def yaml_workload(exe: Path, work: Path, run: Runner) -> str:
    """libyaml's test-suite parser prints the event stream of a generated document."""
    lines = []
    for i in range(2500):
        lines.append(f"- id: {i}\n  name: 'n{i % 97}'\n  tags: [a, b{i % 7}, \"c {i}\"]\n"
                     f"  nested: {{w: {(i * 7919) % 1000}, list: [{i}, {i + 1}]}}\n"
                     f"  text: |\n    spill {i}\n    reload {i * 3}\n")
    (work / "doc.yaml").write_text("".join(lines))
    out = run([str(exe), str(work / "doc.yaml")])
    return f"{len(out.splitlines())} events, sha256 {sha(out)}"


@dataclass(frozen=True)
class Recipe:
    package: str  # build-cache directory prefix
    sources: tuple[str, ...]  # paths relative to the tree, as in mlgo_compile_commands.json
    libs: tuple[str, ...]
    workload: Callable[[Path, Path, Runner], str]
    # Among a file's compile commands (a package may compile it several ways), prefer those
    # with this flag.
    prefer: str | None = None
    # Added to every compile, only to make the workload's instruction count repeatable.
    extra: tuple[str, ...] = ()


def _lua_sources() -> tuple[str, ...]:
    names = ("lapi lauxlib lbaselib lcode lcorolib lctype ldblib ldebug ldo ldump lfunc lgc linit "
             "liolib llex lmathlib lmem loadlib lobject lopcodes loslib lparser lstate lstring "
             "lstrlib ltable ltablib ltm lua lundump lutf8lib lvm lzio").split()
    return tuple(f"src/{n}.c" for n in names)


ZLIB = ("adler32 compress crc32 deflate gzclose gzlib gzread gzwrite infback inffast inflate "
        "inftrees trees uncompr zutil").split()
JQ = ("builtin bytecode compile execute jq_test jv jv_alloc jv_aux jv_dtoa jv_file jv_parse "
      "jv_print jv_unicode lexer linker locfile main parser util").split()
PCRE2 = ("auto_possess chartables compile config context convert dfa_match error extuni "
         "find_bracket jit_compile maketables match match_data newline ord2utf pattern_info "
         "script_run serialize string_utils study substitute substring tables ucd valid_utf "
         "xclass").split()

ZSTD_LIB = ("common/debug common/entropy_common common/error_private common/fse_decompress "
            "common/pool common/threading common/xxhash common/zstd_common compress/fse_compress "
            "compress/hist compress/huf_compress compress/zstd_compress "
            "compress/zstd_compress_literals compress/zstd_compress_sequences "
            "compress/zstd_compress_superblock compress/zstd_double_fast compress/zstd_fast "
            "compress/zstd_lazy compress/zstd_ldm compress/zstd_opt compress/zstdmt_compress "
            "decompress/huf_decompress decompress/zstd_ddict decompress/zstd_decompress "
            "decompress/zstd_decompress_block dictBuilder/cover dictBuilder/divsufsort "
            "dictBuilder/fastcover dictBuilder/zdict legacy/zstd_v05 legacy/zstd_v06 "
            "legacy/zstd_v07").split()
ZSTD_PROGRAMS = ("benchfn benchzstd datagen dibio fileio fileio_asyncio timefn util zstdcli "
                 "zstdcli_trace").split()
YAML = "api dumper emitter loader parser reader scanner writer".split()

RECIPES: dict[str, Recipe] = {
    # lua seeds its string hashes from the time and addresses (lstate.c's luai_makeseed, a
    # hook meant to be overridden): a fixed seed makes the instruction count repeatable.
    "lua5.4": Recipe("lua5.4-", _lua_sources(), ("-lm", "-ldl", "-lreadline"), lua_workload,
                     extra=("-Dluai_makeseed(L)=0u",)),
    "bzip2": Recipe("bzip2-", tuple(f"{n}.c" for n in (
        "blocksort huffman crctable randtable compress decompress bzlib bzip2".split())),
        (), bzip2_workload),
    "zlib (minigzip)": Recipe("zlib-", (*(f"{n}.c" for n in ZLIB), "test/minigzip.c"), (),
                              zlib_workload),
    "lz4": Recipe("lz4-", tuple(f"lib/{n}.c" for n in "lz4 lz4frame lz4hc xxhash".split()) + tuple(
        f"programs/{n}.c" for n in "bench datagen lz4cli lz4io".split()), ("-lpthread",),
        lz4_workload),
    "jq": Recipe("jq-", tuple(f"src/{n}.c" for n in JQ), ("-lonig", "-lm"), jq_workload),
    # The 8-bit library (also built for 16 and 32 bits) and pcre2grep, which sets its own width.
    "pcre2 (pcre2grep)": Recipe("pcre2-", (*(f"src/pcre2_{n}.c" for n in PCRE2),
                                            "src/pcre2grep.c"), (), pcre2_workload,
                                prefer="-DPCRE2_CODE_UNIT_WIDTH=8"),
    # The zstd command as debian/rules builds it (programs/Makefile: the library compiled again
    # with the program's flags, gzip/xz/lz4 support on).
    "zstd": Recipe("libzstd-", (*(f"lib/{n}.c" for n in ZSTD_LIB),
                               "lib/decompress/huf_decompress_amd64.S",
                               *(f"programs/{n}.c" for n in ZSTD_PROGRAMS)),
                   ("-lz", "-llzma", "-llz4", "-lpthread"), zstd_workload,
                   prefer="-DZSTD_GZCOMPRESS"),
    "expat (xmlwf)": Recipe("expat-", tuple(f"src/lib/{n}.c" for n in "xmlparse xmlrole xmltok".split())
                            + tuple(f"src/xmlwf/{n}.c" for n in
                                    "xmlwf xmlfile codepage unixfilemap".split()), (),
                            expat_workload),
    "libyaml (parser)": Recipe("libyaml-", (*(f"src/{n}.c" for n in YAML),
                                            "tests/run-parser-test-suite.c"), (), yaml_workload),
}

# The workloads' outputs (from plain clang-19 builds; the compressed sizes and hashes are fixed by
# the formats and the packages' versions, not by the compiler).
KNOWN: dict[str, str] = {
    "lua5.4": "17711\t0\t10006\t15514\t-31.881",
    "bzip2": "600000 -> 68928 bytes, sha256 e295c7f99fd3e24d, round trip ok",
    "zlib (minigzip)": "1000000 -> 172337 bytes, sha256 865f52ec44a00fe3, round trip ok",
    "lz4": "2000000 -> 439974 bytes, sha256 c8506dae5755605c, round trip ok",
    "jq": "bcc7e24dc40da5d1",
    "pcre2 (pcre2grep)": "2676 matches, sha256 2dd5935824190184",
    "zstd": "1000000 -> 188909 bytes, sha256 763e36a71f402544, round trip ok",
    "expat (xmlwf)": "603213 bytes canonical, sha256 3cc2357a37428fdd",
    "libyaml (parser)": "60006 events, sha256 ff2d3e633442d046",
}


def tree_of(program: str, recipe: Recipe) -> Path:
    trees = sorted(p for p in BUILD_CACHE.glob(recipe.package + "*")
                   if (p / "mlgo_compile_commands.json").is_file())
    if not trees:
        raise BenchError(program, "finding the source tree",
                         f"no {BUILD_CACHE}/{recipe.package}*/mlgo_compile_commands.json "
                         "(run `mlgo corpus debian` for the package first)")
    return trees[-1]


def compile_commands(program: str, recipe: Recipe, tree: Path) -> list[tuple[str, list[str], Path]]:
    """(source, arguments without compiler and outputs, directory) per source. The static
    (non -fPIC) command is taken when the package compiled a file twice, as the program links."""
    entries = json.loads((tree / "mlgo_compile_commands.json").read_text())
    out = []
    for rel in recipe.sources:
        cands = [e for e in entries if Path(e["file"]).resolve() == (tree / rel).resolve()]
        if not cands:
            raise BenchError(program, f"compile command for {rel}",
                             f"not in {tree}/mlgo_compile_commands.json")
        e = min(cands, key=lambda c: (recipe.prefer not in (None, *c["arguments"]),
                                      "-fPIC" in c["arguments"]))
        args, skip = [], False
        for a in e["arguments"][1:]:
            if skip:
                skip = False
            elif a in DROP_WITH_ARG:
                skip = True
            elif a not in DROP:
                args.append(a)
        out.append((rel, args, Path(e["directory"])))
    return out


def build(program: str, recipe: Recipe, tree: Path, cc: str, env: dict[str, str],
          out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, list[str], Path]) -> Path:
        rel, args, cwd = item
        obj = out / (rel.replace("/", "_") + ".o")
        cmd = [cc, *args, *recipe.extra, "-c", "-o", str(obj), *REMARKS,
               f"-foptimization-record-file={obj.with_suffix('.yaml')}"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
        if r.returncode != 0:
            raise BenchError(program, f"compiling {rel} with {cc}", r.stderr)
        return obj

    with ThreadPoolExecutor(2) as ex:
        objs = list(ex.map(one, compile_commands(program, recipe, tree)))
    exe = out / "prog"
    # No debug info in the program: valgrind 3.19 cannot read clang-19's DWARF 5 (the code is
    # the same with or without it).
    r = subprocess.run([toolchain.clang().path, *map(str, objs), "-o", str(exe), *recipe.libs,
                        "-Wl,--strip-debug"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(program, f"linking with {cc}", r.stderr)
    return exe


def spill_cost(out: Path) -> float:
    return sum(parse_regalloc_remarks(y).total for y in out.glob("*.yaml"))


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share their mean rank), for Spearman's coefficient."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", action="append", choices=sorted(RECIPES),
                    help="only these programs (default: all)")
    ap.add_argument("--policy", action="append", default=[],
                    help="another regalloc policy directory, after proxy and regalloc")
    ap.add_argument("--no-shipped", action="store_true",
                    help="leave out proxy and regalloc (plain and the --policy ones only)")
    ap.add_argument("--smoke", action="store_true",
                    help="build plain only and run the workloads without callgrind")
    args = ap.parse_args()
    programs = args.program or list(RECIPES)
    policies = [] if args.smoke else [*([] if args.no_shipped else ["proxy", "regalloc"]),
                                      *args.policy]
    os.environ.pop("MLGO_INLINE_POLICY", None)  # measure eviction only
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load}")
    variants = [("plain", toolchain.clang().path, dict(os.environ))]
    for p in policies:
        # The launcher serves the policies set when it is built: one launcher per policy.
        os.environ["MLGO_REGALLOC_POLICY"] = p
        try:
            launcher = launcher_for("clang")
        except MlgoError as e:
            raise SystemExit(f"policy {p}: building its launcher failed: {e}") from None
        variants.append((p, launcher, dict(os.environ)))
    results: dict[str, dict[str, tuple[int, float]]] = {}
    noise: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mlgo-rprog-") as tmp:
        for program in programs:
            recipe = RECIPES[program]
            tree = tree_of(program, recipe)
            print(f"\n{program}: {tree.name}, {len(recipe.sources)} sources", flush=True)
            outputs = {}
            for label, cc, env in variants:
                out = Path(tmp) / f"{program.split()[0]}-{label.replace('/', '_')}"
                exe = build(program, recipe, tree, cc, env, out)
                run = Runner(program, native=args.smoke)
                (out / "work").mkdir()
                outputs[label] = recipe.workload(exe, out / "work", run)
                results.setdefault(program, {})[label] = (run.ir, spill_cost(out))
                if label == "plain" and not args.smoke:
                    # The same binary again: how much the count moves by itself (jq seeds its
                    # hashes with arc4random, so its count is not exactly repeatable).
                    again = Runner(program)
                    shutil.rmtree(out / "work")
                    (out / "work").mkdir()
                    recipe.workload(exe, out / "work", again)
                    noise[program] = 100 * abs(again.ir - run.ir) / run.ir
                print(f"  {label:24s} Ir {run.ir:>14,d}  spill cost {spill_cost(out):14.0f}  "
                      f"output: {outputs[label]}", flush=True)
            if len(set(outputs.values())) != 1:
                raise BenchError(program, "comparing outputs", f"variants differ: {outputs}")
            known = KNOWN.get(program)
            if args.smoke:
                continue
            if known is None:
                raise BenchError(program, "checking the output",
                                 f"no known value for it; got {outputs['plain']!r}")
            if outputs["plain"] != known:
                raise BenchError(program, "checking the output",
                                 f"got {outputs['plain']!r}, expected {known!r}")
    if args.smoke:
        return
    labels = [v[0] for v in variants]
    print(f"\n{'program':18s}" + "".join(f"{'Ir ' + lb:>18s}" for lb in labels)
          + "".join(f"{'Ir ' + lb:>16s}{'spill ' + lb:>16s}" for lb in labels[1:])
          + f"{'plain rerun':>14s}")
    xs, ys = [], []
    for program, row in results.items():
        base_ir, base_spill = row["plain"]
        line = f"{program:18s}" + "".join(f"{row[lb][0]:18,d}" for lb in labels)
        for lb in labels[1:]:
            d_ir = 100 * (row[lb][0] - base_ir) / base_ir
            d_spill = 100 * (row[lb][1] - base_spill) / base_spill
            xs.append(d_spill)
            ys.append(d_ir)
            line += f"{d_ir:+15.3f}%{d_spill:+15.2f}%"
        print(line + f"{noise[program]:13.3f}%")
    print("\n(changes are vs plain clang-19; 'plain rerun': |Ir change| running the plain build "
          "again, the measurement's own noise)")
    if len(xs) >= 3:
        pearson = statistics.correlation(xs, ys)
        spearman = statistics.correlation(ranks(xs), ranks(ys))
        print(f"spill-cost change vs Ir change over {len(xs)} (program, policy) pairs: "
              f"Pearson r = {pearson:+.3f}, Spearman rho = {spearman:+.3f}")


if __name__ == "__main__":
    main()
