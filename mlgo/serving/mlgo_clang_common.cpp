// mlgo-clang's shared helpers (mlgo_clang_common.h).
#include "mlgo_clang_common.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

#include "policy_binding.h"

namespace mlgo_clang {

// One line on stderr, "mlgo-clang: KIND: ..." (KIND "error" or "warning"); returns 1, an
// error's exit status. The line goes out in one write: stderr is unbuffered, and a parallel
// build's compiles share one pipe, so piecewise writes interleave with other compiles' lines.
int say(const char *Kind, const char *Fmt, ...) {
  va_list AP, Copy;
  va_start(AP, Fmt);
  va_copy(Copy, AP);
  int N = std::vsnprintf(nullptr, 0, Fmt, Copy);
  va_end(Copy);
  std::string Line = std::string("mlgo-clang: ") + Kind + ": ";
  size_t Head = Line.size();
  Line.resize(Head + (N > 0 ? N : 0) + 1);
  std::vsnprintf(&Line[Head], Line.size() - Head, Fmt, AP);
  va_end(AP);
  Line.back() = '\n';
  std::fflush(stderr);
  for (size_t Done = 0; Done < Line.size();) {
    ssize_t W = ::write(STDERR_FILENO, Line.data() + Done, Line.size() - Done);
    if (W < 0 && errno == EINTR)
      continue;
    if (W <= 0)
      break;
    Done += W;
  }
  return 1;
}

bool fallbackAllowed() {
  const char *V = std::getenv("MLGO_FALLBACK");
  return V && std::strcmp(V, "1") == 0;
}

bool startsWith(const std::string &A, const char *Prefix) {
  return A.compare(0, std::strlen(Prefix), Prefix) == 0;
}

bool among(const std::string &A, std::initializer_list<const char *> List) {
  for (const char *L : List)
    if (A == L)
      return true;
  return false;
}

bool isRegularFile(const std::string &Path) {
  struct stat St;
  return ::stat(Path.c_str(), &St) == 0 && S_ISREG(St.st_mode);
}

bool readFile(const std::string &Path, std::string &Out, const char *&Why) {
  std::FILE *F = std::fopen(Path.c_str(), "rb");
  if (!F)
    return Why = std::strerror(errno), false;
  char Buf[1 << 14];
  size_t Got;
  while ((Got = std::fread(Buf, 1, sizeof Buf, F)) > 0)
    Out.append(Buf, Got);
  bool Failed = std::ferror(F);
  std::fclose(F);
  return Failed ? (Why = "read error", false) : true;
}

// This program's line of MLGO_DECISION_SUMMARY.
void summaryLine(const char *Policy, long long Decisions, const char *Notes) {
  std::string Failed = mlgo::appendSummaryLine(std::string("regalloc\t") + Policy + "\t-\t" +
                                               std::to_string(Decisions) + "\t-\t" + Notes + "\n");
  if (!Failed.empty())
    say("warning", "%s", Failed.c_str());
}

} // namespace mlgo_clang
