// A stand-in for clang in interactive inlining mode that does nothing but the protocol, to time
// the host's round trip per decision without the compiler's own work in the way.
//
//   fake_compiler BASE N [THRASH_MB]
//
// Opens BASE.in (advice) then BASE.out (log) as clang does, sends LLVM 19's inliner header
// shape (39 int64 [1] features: cost_estimate, threshold, 37 others) and N observations, a
// {"context"} line before every fifth, each answered by an int64 before the next. With
// THRASH_MB it touches that much memory before each observation, as a real compile evicts the
// host's caches between decisions. Prints the mean round trip (write observation -> advice
// read) to stderr.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fake_compiler BASE N [THRASH_MB]\n");
    return 2;
  }
  char in_path[4096], out_path[4096];
  snprintf(in_path, sizeof in_path, "%s.in", argv[1]);
  snprintf(out_path, sizeof out_path, "%s.out", argv[1]);
  int n = atoi(argv[2]);
  size_t thrash = argc > 3 ? (size_t)atoi(argv[3]) << 20 : 0;
  char *mem = thrash ? calloc(thrash, 1) : NULL;
  int rfd = open(in_path, O_RDONLY);
  int wfd = open(out_path, O_WRONLY);
  if (rfd < 0 || wfd < 0) { perror("open"); return 1; }
  static char hdr[1 << 16];
  int p = snprintf(hdr, sizeof hdr, "{\"features\":[");
  for (int i = 0; i < 39; i++) {
    char name[32];
    if (i == 0) strcpy(name, "cost_estimate");
    else if (i == 1) strcpy(name, "threshold");
    else snprintf(name, sizeof name, "feature_%d", i);
    p += snprintf(hdr + p, sizeof hdr - p,
                  "%s{\"name\":\"%s\",\"type\":\"int64_t\",\"port\":%d,\"shape\":[1]}",
                  i ? "," : "", name, i);
  }
  p += snprintf(hdr + p, sizeof hdr - p,
                "],\"advice\":{\"name\":\"inlining_decision\",\"type\":\"int64_t\","
                "\"port\":39,\"shape\":[1]}}\n");
  if (write_all(wfd, hdr, (size_t)p)) return 1;
  double waited = 0;
  for (int k = 0; k < n; k++) {
    if (mem)
      for (size_t j = 0; j < thrash; j += 64) mem[j]++;
    char buf[1024];
    int q = 0;
    if (k % 5 == 0) q += snprintf(buf + q, sizeof buf - q, "{\"context\":\"f%d\"}\n", k);
    q += snprintf(buf + q, sizeof buf - q, "{\"observation\":%d}\n", k);
    int64_t v[39];
    for (int i = 0; i < 39; i++) v[i] = k + i;
    v[0] = k % 7;
    v[1] = 3;
    memcpy(buf + q, v, sizeof v);
    q += sizeof v;
    buf[q++] = '\n';
    double t0 = now();
    if (write_all(wfd, buf, (size_t)q)) return 1;
    int64_t advice;
    for (size_t got = 0; got < 8;) {
      ssize_t r = read(rfd, (char *)&advice + got, 8 - got);
      if (r <= 0) return 3;
      got += (size_t)r;
    }
    waited += now() - t0;
    if (advice != (v[0] < v[1])) { fprintf(stderr, "wrong advice at %d\n", k); return 4; }
  }
  fprintf(stderr, "%d round trips, %.1f us each\n", n, n ? waited * 1e6 / n : 0.0);
  return 0;
}
