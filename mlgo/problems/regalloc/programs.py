"""The programs regalloc's profiled reward is trained and checked on: Debian source packages
built from their own recorded compile commands (`mlgo corpus debian` keeps the build), each with
a fixed, deterministic, CPU-bound workload whose output is known (KNOWN), so a build that
computes something else is caught.

The programs are split once, before anything was measured on them: profiles, training modules
and any choice come from TRAINING (and EXTRA_TRAINING, added later) only; VALIDATION programs
are only run to choose among candidate policies; HELD_OUT ones are measured once, for reports.
`mlgo profile programs` (mlgo/problems/regalloc/program_profiles.py) builds the training
programs plain and writes their block profile and corpus; benchmarks/regalloc_programs.py and
regalloc_reward.py measure policies on them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from corpus_tools.debian import DEFAULT_CACHE
from mlgo_base import process, toolchain
from mlgo_base.errors import MlgoError

REMARKS = ["-fsave-optimization-record=yaml", "-foptimization-record-passes=regalloc"]
# Flags of a recorded compile command that name its outputs; replaced by ours.
DROP_WITH_ARG = {"-o", "-MF", "-MT", "-MQ"}
DROP = {"-c", "-MD", "-MMD", "-MP"}

TRAINING = ("lua5.4", "bzip2", "zlib (minigzip)", "lz4", "libyaml (parser)")
HELD_OUT = ("jq", "pcre2 (pcre2grep)", "zstd", "expat (xmlwf)")
# Added after the split above: EXTRA_TRAINING programs are training programs too (a profile and
# corpus may come from them); VALIDATION programs are never profiled or searched on.
EXTRA_TRAINING = ("jsonnet", "libpng (pngtest)")
VALIDATION = ("giflib (gif2rgb)",)


class ProgramError(MlgoError):
    """One clear line naming the program and the step that failed."""

    def __init__(self, program: str, step: str, detail: str) -> None:
        super().__init__(f"{program}: {step} failed: {detail.strip()[-1500:]}")


# Integer and float arithmetic, closures, tables, sorting and string building: the work an
# interpreter's hot loop (lvm.c) and its libraries spend registers on.
LUA_PROGRAM = """
local function fib(n) if n < 2 then return n end return fib(n-1) + fib(n-2) end
local t = {}
for i = 1, 20000 do t[i] = (i * 7919) % 10007 end
table.sort(t)
local s = {}
for i = 1, 2000 do s[#s+1] = string.format("%d:%x", t[i], i) end
local acc = 0.0
for i = 1, 50000 do acc = acc + math.sin(i) * (i % 13) end
print(fib(22), t[1], t[#t], #table.concat(s, ","), string.format("%.3f", acc))
"""

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
    native: bool = False  # run without callgrind (to check a recipe quickly)
    ir: int = 0
    # Where to keep callgrind's output files (one per step, symbols not demangled), for
    # per-function counts; None: not kept.
    profile_dir: Path | None = None
    callgrind_args: tuple[str, ...] = ()
    steps: int = 0
    timeout: float = 1800.0

    def __call__(self, argv: list[str], stdin: bytes = b"", step: str = "run") -> bytes:
        out = "/dev/null"
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = str(self.profile_dir / f"step{self.steps}.cg")
        self.steps += 1
        cmd = argv if self.native else [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--demangle=no",
            *self.callgrind_args, *argv]
        stdout, stderr = _run_binary(cmd, stdin, self.timeout,
                                     f"{self.program}: {step} ({shlex.join(argv)})")
        if not self.native:
            m = re.search(rb"Collected\s*:\s*(\d+)", stderr)
            if not m:
                raise ProgramError(self.program, step, "no 'Collected' count in callgrind's output")
            self.ir += int(m.group(1))
        return stdout


def _run_binary(argv: list[str], stdin: bytes, timeout: float, what: str) -> tuple[bytes, bytes]:
    """Run `argv` with `stdin`, returning its output as bytes (a compressor's): started and
    killed through mlgo_base.process, whose `run` speaks text."""
    proc = process.start(argv, stdin=subprocess.PIPE, what=what)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill_group(proc)
        raise process.ProcessError(what, argv, f"timed out after {timeout:g} s",
                                   timed_out=True) from None
    except BaseException:
        process.kill_group(proc)
        raise
    if proc.returncode != 0:
        raise process.ProcessError(what, argv, process.describe_status(proc.returncode),
                                   err.decode(errors="replace"), returncode=proc.returncode)
    return out, err


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def roundtrip(run: Runner, compress: list[str], decompress: list[str], data: bytes) -> str:
    packed = run(compress, data, "compress")
    unpacked = run(decompress, packed, "decompress")
    if unpacked != data:
        raise ProgramError(run.program, "decompress", "round trip does not give the input back")
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


# A CPU-bound Jsonnet program: array and object comprehensions, std.sort, folds, string
# formatting, md5 and a recursive function, all in the interpreter (core/vm.cpp). Small: the
# 0.18 standard library's sort, join and format are written in Jsonnet and cost ~1 ms a call.
JSONNET_PROGRAM = """
local fib(n) = if n < 2 then n else fib(n - 1) + fib(n - 2);
local items = [{ id: i, name: 'n%03d' % ((i * 7919) % 1000), v: (i * 31) % 977 }
               for i in std.range(0, 299)];
local sorted = std.sort(items[0:40], function(x) x.v * 10000 + x.id);
local byName = std.foldl(function(acc, x) acc { [x.name[0:2]]+: [x.v] }, items[0:25], {});
{
  fib: fib(18),
  sum: std.foldl(function(a, x) a + x.v, items, 0),
  first: sorted[0:3],
  names: std.md5(std.join(',', [x.name for x in sorted])),
  distinct: std.length(std.set([x.name[0:3] for x in items[0:40]])),
  lines: std.md5(std.join('\\n', ['%(name)s=%(v)05d' % x for x in items[0:25]])),
  groups: { [k]: std.length(byName[k]) for k in std.objectFields(byName) },
}
"""


def jsonnet_workload(exe: Path, work: Path, run: Runner) -> str:
    out = run([str(exe), "-e", JSONNET_PROGRAM])
    return f"{len(out)} bytes of JSON, sha256 {sha(out)}"


def png_image(width: int, height: int, seed: int = 12345) -> bytes:
    """A deterministic RGBA PNG (written with Python's zlib) whose rows use all five filter
    types over gradients, stripes and noise, so libpng's unfilter and filter-choice code both
    work on it."""
    x, rows = seed, []
    for y in range(height):
        row = bytearray()
        for i in range(width):
            x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
            noise = (x >> 56) if (i // 64 + y // 64) % 3 == 0 else 0
            row += bytes(((i * 3 + y) & 255, (i ^ y) & 255, (noise + (i * y >> 6)) & 255,
                          255 - ((i + 2 * y) & 127)))
        rows.append(row)
    raw = bytearray()
    bpp = 4
    for y, row in enumerate(rows):
        ftype = y % 5
        prev = rows[y - 1] if y else bytes(len(row))
        out = bytearray(len(row))
        for k, v in enumerate(row):
            a = row[k - bpp] if k >= bpp else 0
            b = prev[k]
            c = prev[k - bpp] if k >= bpp else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) >> 1
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[k] = (v - pred) & 255
        raw += bytes((ftype,)) + out

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 6, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b""))


def libpng_workload(exe: Path, work: Path, run: Runner) -> str:
    """pngtest reads a generated image, writes it again (choosing a filter per row) and reads
    both back to compare them."""
    (work / "in.png").write_bytes(png_image(512, 512))
    run([str(exe), str(work / "in.png"), str(work / "out.png")])
    out = (work / "out.png").read_bytes()
    return f"{len(out)} bytes written, sha256 {sha(out)}"


def rgb_image(width: int, height: int, seed: int = 12345) -> bytes:
    """Deterministic RGB bytes: smooth gradients with noisy patches (many distinct colours, so
    the quantizer has work to do)."""
    x, out = seed, bytearray()
    for y in range(height):
        for i in range(width):
            x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
            n = (x >> 58) if (i // 32 + y // 32) % 4 == 0 else 0
            out += bytes(((i + n) & 255, (y * 2 + n) & 255, ((i * y) >> 7) & 255))
    return bytes(out)


def giflib_workload(exe: Path, work: Path, run: Runner) -> str:
    """gif2rgb quantizes a generated RGB image to 256 colours and LZW-encodes it as a GIF, then
    decodes that GIF back to RGB."""
    w, h = 1280, 960
    (work / "in.rgb").write_bytes(rgb_image(w, h))
    gif = run([str(exe), "-1", "-c", "8", "-s", str(w), str(h), str(work / "in.rgb")],
              step="encode")
    (work / "out.gif").write_bytes(gif)
    run([str(exe), "-1", "-o", str(work / "out.rgb"), str(work / "out.gif")], step="decode")
    rgb = (work / "out.rgb").read_bytes()
    if len(rgb) != w * h * 3:
        raise ProgramError(run.program, "decode", f"{len(rgb)} RGB bytes, expected {w * h * 3}")
    return f"gif {len(gif)} bytes, sha256 {sha(gif)}; decoded sha256 {sha(rgb)}"


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

JSONNET_CORE = ("desugarer formatter lexer libjsonnet parser pass static_analysis string_utils "
                "vm").split()
RYML = "third_party/rapidyaml/rapidyaml"
RYML_YML = "common parse preprocess tree".split()
C4CORE = "base64 char_traits error format language memory_resource memory_util time".split()
LIBPNG = ("png pngerror pngget pngmem pngpread pngread pngrio pngrtran pngrutil pngset pngtrans "
          "pngwio pngwrite pngwtran pngwutil intel/intel_init intel/filter_sse2_intrinsics").split()
GIFLIB = ("dgif_lib egif_lib gifalloc gif_err gif_font gif_hash openbsd-reallocarray quantize "
          "qprintf getarg").split()

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
    # The jsonnet command as CMake builds it (cmd/CMakeLists.txt: jsonnet.cpp and utils.cpp on
    # libjsonnet_static, libmd5 and libryml), at the -O3 CMake adds; the Python module's
    # compiles of the same files (setup.py, -O2) are not it.
    "jsonnet": Recipe("jsonnet-", (*(f"core/{n}.cpp" for n in JSONNET_CORE),
                                   "third_party/md5/md5.cpp",
                                   *(f"{RYML}/src/c4/yml/{n}.cpp" for n in RYML_YML),
                                   *(f"{RYML}/ext/c4core/src/c4/{n}.cpp" for n in C4CORE),
                                   "cmd/jsonnet.cpp", "cmd/utils.cpp"),
                      ("-lstdc++", "-lm"), jsonnet_workload, prefer="-O3"),
    # pngtest on the static library's objects (Makefile.am: pngtest_LDADD); the mips, arm and
    # powerpc files compile to nothing on x86-64 and Debian does not enable the SSE2 filters.
    "libpng (pngtest)": Recipe("libpng1.6-", (*(f"{n}.c" for n in LIBPNG), "pngtest.c"),
                               ("-lz", "-lm"), libpng_workload),
    # gif2rgb on libgif and libutil (quantize.c, qprintf.c, getarg.c), as giflib's Makefile
    # links it. The tools' second, cc1-level commands (recorded from their compile-and-link
    # step) are not driver commands: the driver's flag -fstack-protector-strong tells them apart.
    "giflib (gif2rgb)": Recipe("giflib-", tuple(f"{n}.c" for n in GIFLIB) + ("gif2rgb.c",), (),
                               giflib_workload, prefer="-fstack-protector-strong"),
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
    "jsonnet": "572 bytes of JSON, sha256 40014a14b5cb44be",
    "libpng (pngtest)": "231230 bytes written, sha256 6a92b9d9e3c91eb6",
    "giflib (gif2rgb)": "gif 408928 bytes, sha256 f1f670636de3edf0; decoded sha256 41464b9be4903768",
}


def project_of(program: str) -> str:
    """The corpus project name (`mlgo corpus debian`'s) of a program's package."""
    return RECIPES[program].package.rstrip("-")


def tree_of(program: str, recipe: Recipe, cache: Path | None = None) -> Path:
    """The package's unpacked, built source tree in `mlgo corpus debian`'s build cache."""
    build_cache = (cache or DEFAULT_CACHE) / "build"
    trees = sorted(p for p in build_cache.glob(recipe.package + "*")
                   if (p / "mlgo_compile_commands.json").is_file())
    if not trees:
        raise ProgramError(program, "finding the source tree",
                           f"no {build_cache}/{recipe.package}*/mlgo_compile_commands.json "
                           f"(run `mlgo corpus debian {recipe.package.rstrip('-')}` first)")
    return trees[-1]


def compile_commands(program: str, recipe: Recipe, tree: Path) -> list[tuple[str, list[str], Path]]:
    """(source, arguments without compiler and outputs, directory) per source. The static
    (non -fPIC) command is taken when the package compiled a file twice, as the program links."""
    entries = json.loads((tree / "mlgo_compile_commands.json").read_text())
    out = []
    for rel in recipe.sources:
        cands = [e for e in entries if Path(e["file"]).resolve() == (tree / rel).resolve()]
        if not cands:
            raise ProgramError(program, f"compile command for {rel}",
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
        try:
            process.run(cmd, env=env, cwd=cwd, timeout=900, what=f"{program}: compiling {rel}")
        except process.ProcessError as e:
            raise ProgramError(program, f"compiling {rel} with {cc}", str(e)) from e
        return obj

    with ThreadPoolExecutor(2) as ex:
        objs = list(ex.map(one, compile_commands(program, recipe, tree)))
    exe = out / "prog"
    # No debug info in the program: valgrind 3.19 cannot read clang-19's DWARF 5 (the code is
    # the same with or without it).
    try:
        process.run([toolchain.clang().path, *map(str, objs), "-o", str(exe), *recipe.libs,
                     "-Wl,--strip-debug"], timeout=300, what=f"{program}: linking")
    except process.ProcessError as e:
        raise ProgramError(program, f"linking with {cc}", str(e)) from e
    return exe


def workload_instructions(program: str, cc: str, env: dict[str, str], work: Path,
                          cache: Path | None = None) -> int:
    """Build `program` with the compiler `cc` (run with `env`) in `work`, run its workload under
    callgrind and check its output: the instructions the workload executed (callgrind's Ir)."""
    recipe = RECIPES[program]
    exe = build(program, recipe, tree_of(program, recipe, cache), cc, env, work / "build")
    run = Runner(program)
    (work / "run").mkdir(parents=True, exist_ok=True)
    output = recipe.workload(exe, work / "run", run)
    if output != KNOWN[program]:
        raise ProgramError(program, "checking the workload's output",
                           f"got {output!r}, expected {KNOWN[program]!r}")
    return run.ir
