// The cheapest possible host for LLVM's interactive inliner channel, to measure the floor of
// the protocol itself (compiler writes, host wakes, answers, compiler wakes) without Python.
//
//   echo_host BASE -- clang-19 ARGS... -mllvm -inliner-interactive-channel-base=BASE
//
// Makes BASE.in/BASE.out, starts the compiler, answers every observation with
// cost_estimate < threshold, waits for the compiler and exits with its status. Blocking I/O and
// no deadlines: a benchmark tool, not a host to train with (mlgo.protocol.channel is that).
// Assumes what LLVM 19's inliner sends: every feature is int64_t of shape [1].
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char buf[1 << 20];
// A pipe read returns what is there (never waits for the full size), so reading into a buffer
// never blocks past the current observation.
static char in[1 << 16];
static int in_pos, in_len;

static int fill(int fd) {
  in_pos = 0;
  in_len = (int)read(fd, in, sizeof in);
  return in_len > 0;
}

static int read_line(int fd, char *out, int cap) {
  int n = 0;
  while (n < cap - 1) {
    if (in_pos == in_len && !fill(fd)) return -1;
    if ((out[n++] = in[in_pos++]) == '\n') break;
  }
  out[n] = 0;
  return n;
}

static int read_exact(int fd, char *out, int n) {
  for (int got = 0; got < n;) {
    if (in_pos == in_len && !fill(fd)) return -1;
    int k = in_len - in_pos < n - got ? in_len - in_pos : n - got;
    memcpy(out + got, in + in_pos, k);
    in_pos += k;
    got += k;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    fprintf(stderr, "usage: echo_host BASE -- COMPILER ARGS...\n");
    return 2;
  }
  char in_path[4096], out_path[4096];
  snprintf(in_path, sizeof in_path, "%s.in", argv[1]);
  snprintf(out_path, sizeof out_path, "%s.out", argv[1]);
  unlink(in_path);
  unlink(out_path);
  if (mkfifo(in_path, 0600) || mkfifo(out_path, 0600)) { perror("mkfifo"); return 1; }
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[3], argv + 3);
    _exit(127);
  }
  int wfd = open(in_path, O_WRONLY);   // the compiler opens BASE.in first
  int rfd = open(out_path, O_RDONLY);
  if (wfd < 0 || rfd < 0) { perror("open"); return 1; }
  if (read_line(rfd, buf, sizeof buf) <= 0) return 1;
  // Feature order from the header: count "name" keys until "advice" starts.
  int nfeat = 0, i_cost = -1, i_thr = -1;
  char *adv = strstr(buf, "\"advice\"");
  for (char *p = strstr(buf, "\"name\""); p && (!adv || p < adv); p = strstr(p + 6, "\"name\"")) {
    char *v = strchr(p + 6, '"');
    if (v && strncmp(v, "\"cost_estimate\"", 15) == 0) i_cost = nfeat;
    if (v && strncmp(v, "\"threshold\"", 11) == 0) i_thr = nfeat;
    nfeat++;
  }
  if (i_cost < 0 || i_thr < 0) { fprintf(stderr, "no cost_estimate/threshold\n"); return 1; }
  int obs_bytes = nfeat * 8 + 1;
  for (;;) {
    int n = read_line(rfd, buf, sizeof buf);
    if (n <= 0) break;
    if (strncmp(buf, "{\"observation\"", 14) != 0) continue;  // context lines
    if (read_exact(rfd, buf, obs_bytes)) return 1;
    int64_t cost, thr, advice;
    memcpy(&cost, buf + 8 * i_cost, 8);
    memcpy(&thr, buf + 8 * i_thr, 8);
    advice = cost < thr;
    if (write(wfd, &advice, 8) != 8) return 1;
  }
  int status;
  waitpid(pid, &status, 0);
  unlink(in_path);
  unlink(out_path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
