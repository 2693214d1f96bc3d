"""Small hand-written C modules compiled into a corpus, for tests that need a real compiler."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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
}


def make_small_corpus(root: Path, opt: str = "-O2") -> Path:
    """root/corpus with one module per source above (project 'small')."""
    src = root / "src"
    corpus = root / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    (corpus / "small").mkdir(parents=True, exist_ok=True)
    names = []
    for fname, text in SOURCES.items():
        (src / fname).write_text(text)
        name = "small/" + fname
        subprocess.run(["clang-19", opt, "-Xclang", "-disable-llvm-passes", "-emit-llvm", "-c",
                        str(src / fname), "-o", str(corpus / (name + ".bc"))], check=True)
        (corpus / (name + ".cmd")).write_bytes(b"\0".join([b"-c", opt.encode()]))
        names.append(name)
    (corpus / "corpus_description.json").write_text(
        json.dumps({"has_thinlto": False, "modules": names}))
    return corpus
