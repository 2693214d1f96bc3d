// Serving the regalloc policy (mlgo_clang_channel.h). Channel (LLVM 19's interactive mode): the
// compiler opens BASE.in for reading, then BASE.out for writing; it sends one JSON header line,
// then per decision an optional {"context":NAME} line, an {"observation":N} line, the raw
// feature tensors in header order and a newline, and waits for the advice (an int64) on BASE.in.
// We hold BASE.in open read-write and BASE.out non-blocking, so neither open can block, and
// wait with poll() on the log and on a pipe the SIGCHLD handler writes to: a compiler that
// dies, or never opens the channel, ends the wait. The FIFOs live in a private directory that
// goes on success, failure and forwarded signals; what a kill -9 leaves, a later served compile
// removes.
#include "mlgo_clang_channel.h"

#include "mlgo_clang_config.h"

#if CONFIG_SERVES_REGALLOC  // else nothing here is called, and the policy's symbols are absent

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#include "mlgo_clang_process.h"
#include "policy_binding.h"

extern "C" {
int64_t mlgo_regalloc_policy(const void *const *features, size_t num_features);
extern const char mlgo_policy_label[];
}

namespace mlgo_clang {
namespace {

// MLGO_HOST_OPEN_TIMEOUT as whole seconds: `90`, `90s`, `5m` or `1h`; -1 after reporting
// anything else, so that `1h` is never read as 1 second.
long long openTimeout() {
  const char *Text = std::getenv("MLGO_HOST_OPEN_TIMEOUT");
  if (!Text)
    return 3600;
  const long long Max = 2147483647LL;
  long long Value = 0, Unit = 0;
  const char *P = Text;
  for (; *P >= '0' && *P <= '9'; ++P)
    if ((Value = Value * 10 + (*P - '0')) > Max)
      Value = Max + 1;
  if (P > Text && (*P == 0 || P[1] == 0))
    Unit = *P == 0 || *P == 's' ? 1 : *P == 'm' ? 60 : *P == 'h' ? 3600 : 0;
  if (!Unit)
    return say("error", "MLGO_HOST_OPEN_TIMEOUT='%s' is not a duration: give whole seconds, or "
               "a number with s, m or h (90, 90s, 5m, 1h)", Text), -1;
  if (Value > Max / Unit || Value * Unit < 1)
    return say("error", "MLGO_HOST_OPEN_TIMEOUT='%s' is out of range: from 1s to %llds", Text,
               Max), -1;
  return Value * Unit;
}

// ---- the channel's private directory ---------------------------------------------------------

const char ChannelDirPrefix[] = "mlgo-clang-";

// The pid in a channel directory's name (mlgo-clang-PID-XXXXXX), or 0 if it is not one.
pid_t channelDirPid(const char *Name) {
  if (std::strncmp(Name, ChannelDirPrefix, sizeof ChannelDirPrefix - 1) != 0)
    return 0;
  const char *Digits = Name + sizeof ChannelDirPrefix - 1;
  long long Pid = 0;
  const char *P = Digits;
  for (; *P >= '0' && *P <= '9' && Pid < (1LL << 32); ++P)
    Pid = Pid * 10 + (*P - '0');
  if (P == Digits || *P != '-' || std::strlen(P + 1) != 6 || Pid <= 0 || Pid >= (1LL << 31))
    return 0;
  return static_cast<pid_t>(Pid);
}

// Removes the channel directories in Parent that launchers killed before their clean-up
// (kill -9) left behind: named for a pid that no longer runs, owned by us, and not locked. A
// live launcher holds a lock on its directory from just after making it until it is removed,
// and the kernel drops the lock when its process dies, so a live directory is never taken,
// even where the pid in its name means another process (another pid namespace sharing /tmp).
void removeStaleChannelDirs(const char *Parent) {
  DIR *D = ::opendir(Parent);
  if (!D)
    return;
  while (const struct dirent *E = ::readdir(D)) {
    pid_t Pid = channelDirPid(E->d_name);
    if (Pid <= 0 || Pid == ::getpid() || ::kill(Pid, 0) == 0 || errno != ESRCH)
      continue;  // EPERM: the process runs (as someone else)
    int Fd = ::openat(::dirfd(D), E->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (Fd < 0)
      continue;
    struct stat St, Now;
    if (::fstat(Fd, &St) == 0 && St.st_uid == ::geteuid() && ::flock(Fd, LOCK_EX | LOCK_NB) == 0 &&
        ::fstatat(::dirfd(D), E->d_name, &Now, AT_SYMLINK_NOFOLLOW) == 0 &&
        Now.st_ino == St.st_ino && Now.st_dev == St.st_dev) {
      int ListFd = ::fcntl(Fd, F_DUPFD_CLOEXEC, 0);
      if (DIR *Sub = ListFd >= 0 ? ::fdopendir(ListFd) : nullptr) {
        while (const struct dirent *F = ::readdir(Sub))
          if (std::strcmp(F->d_name, ".") != 0 && std::strcmp(F->d_name, "..") != 0)
            ::unlinkat(Fd, F->d_name, 0);  // the FIFOs; a subdirectory stays (and so does this)
        ::closedir(Sub);
      } else if (ListFd >= 0) {
        ::close(ListFd);
      }
      ::unlinkat(::dirfd(D), E->d_name, AT_REMOVEDIR);
    }
    ::close(Fd);
  }
  ::closedir(D);
}

// A new directory only we can use, for the FIFOs: MLGO_TMPDIR, else TMPDIR, else /tmp; LockFd
// holds its lock (removeStaleChannelDirs) until the directory is gone. Stale directories of
// killed launchers go first.
std::string privateDir(std::string &Why, int &LockFd) {
  const char *Parent = std::getenv("MLGO_TMPDIR");
  if (!Parent || !*Parent)
    Parent = std::getenv("TMPDIR");
  if (!Parent || !*Parent)
    Parent = "/tmp";
  removeStaleChannelDirs(Parent);
  std::string Template = std::string(Parent) + "/" + ChannelDirPrefix +
                         std::to_string(::getpid()) + "-XXXXXX";
  if (!::mkdtemp(&Template[0]))
    return Why = std::string(Parent) + ": " + std::strerror(errno), "";
  LockFd = ::open(Template.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (LockFd < 0 || ::flock(LockFd, LOCK_EX) != 0) {
    Why = Template + ": cannot lock it: " + std::strerror(errno);
    if (LockFd >= 0)
      ::close(LockFd);
    LockFd = -1;
    ::rmdir(Template.c_str());
    return "";
  }
  return Template;
}

// ---- serving the regalloc policy ------------------------------------------------------------

struct Failure {
  std::string Msg;
};

// The compiler's feature position of each of the policy's inputs, matched by name
// (policy_binding.h, as the inliner plugin binds); an input the compiler does not send (or sends
// with another type or size) is a Failure.
std::vector<size_t> bindPolicy() {
  std::vector<mlgo::CompilerFeature> Features;
  for (size_t J = 0; J < CONFIG_NUM_FEATURES; ++J)
    Features.push_back({CONFIG_FEATURES[J].Name, CONFIG_FEATURES[J].Type, CONFIG_FEATURES[J].Elements});
  mlgo::PolicyBinding Binding = mlgo::bindPolicyInputs(Features);
  if (!Binding.Error.empty())
    throw Failure{Binding.Error};
  return Binding.Index;
}

// The compiler's log on a non-blocking FIFO: never waits for more bytes than the current line
// or observation holds, and ends when the compiler closed it or exited without opening it.
class Log {
public:
  Log(int Fd, long long OpenTimeout, const std::string &Path)
      : Fd(Fd), Path(Path), OpenTimeout(OpenTimeout) {
    ::clock_gettime(CLOCK_MONOTONIC, &Start);
  }

  // A line with its '\n'; the partial rest at end of stream ("" if nothing was left).
  std::string line(size_t Limit) {
    for (;;) {
      size_t NL = Buf.find('\n', Pos);
      if (NL != std::string::npos) {
        std::string Out = Buf.substr(Pos, NL + 1 - Pos);
        Pos = NL + 1;
        return Out;
      }
      if (Buf.size() - Pos > Limit)
        throw Failure{"event line longer than " + std::to_string(Limit) + " bytes"};
      if (!fill()) {
        std::string Out = Buf.substr(Pos);
        Pos = Buf.size();
        return Out;
      }
    }
  }

  // Exactly N bytes into Out; false if the stream ends first.
  bool exact(size_t N, std::string &Out) {
    while (Buf.size() - Pos < N)
      if (!fill())
        return false;
    Out.assign(Buf, Pos, N);
    Pos += N;
    return true;
  }

private:
  bool fill() {
    if (Pos == Buf.size()) {
      Buf.clear();
      Pos = 0;
    }
    char Chunk[1 << 16];
    for (;;) {
      ssize_t N = ::read(Fd, Chunk, sizeof Chunk);
      if (N > 0) {
        Buf.append(Chunk, static_cast<size_t>(N));
        Opened = true;
        return true;
      }
      if (N < 0 && errno != EAGAIN && errno != EINTR)
        throw Failure{std::string("reading the compiler's log: ") + std::strerror(errno)};
      // 0 means "no writer": the end only once the compiler has closed the log or exited.
      if (N == 0 && (HungUp || compilerExited()))
        return false;
      wait();
    }
  }

  void wait() {
    int Timeout = -1;
    if (!Opened) {  // the open timeout covers the compiler's start, until its header arrives
      struct timespec Now;
      ::clock_gettime(CLOCK_MONOTONIC, &Now);
      long long Left = OpenTimeout * 1000 - ((Now.tv_sec - Start.tv_sec) * 1000LL +
                                             (Now.tv_nsec - Start.tv_nsec) / 1000000);
      if (Left <= 0)
        throw Failure{"the compiler did not open " + Path + " within " +
                      std::to_string(OpenTimeout) + "s"};
      Timeout = Left > 1000000000 ? 1000000000 : static_cast<int>(Left);
    }
    struct pollfd P[2] = {{Fd, POLLIN, 0}, {ChildPipe[0], POLLIN, 0}};
    if (::poll(P, 2, Timeout) < 0 && errno != EINTR)
      throw Failure{std::string("waiting for the compiler: ") + std::strerror(errno)};
    HungUp |= (P[0].revents & POLLHUP) != 0;
    if (P[1].revents & POLLIN) {
      char Drain[64];
      while (::read(ChildPipe[0], Drain, sizeof Drain) > 0) {
      }
    }
  }

  int Fd;
  std::string Path, Buf;
  size_t Pos = 0;
  long long OpenTimeout;
  struct timespec Start;
  bool Opened = false, HungUp = false;
};

bool parseIndex(const std::string &Line, long long &Index) {
  const char *Prefix = "{\"observation\":";
  if (!startsWith(Line, Prefix) || Line.size() < std::strlen(Prefix) + 3)
    return false;
  char *End = nullptr;
  Index = std::strtoll(Line.c_str() + std::strlen(Prefix), &End, 10);
  return std::strcmp(End, "}\n") == 0 && End != Line.c_str() + std::strlen(Prefix);
}

// Where the compiler's header first differs from the one this program was built for.
std::string headerDifference(const std::string &Got) {
  const std::string Want = CONFIG_HEADER_LINE;
  size_t I = 0;
  while (I < Got.size() && I < Want.size() && Got[I] == Want[I])
    ++I;
  size_t From = I > 60 ? I - 60 : 0;
  auto Around = [From](const std::string &S) {
    std::string Part = S.substr(From, 120);
    return Part.substr(0, Part.find('\n'));
  };
  return "the compiler's feature header differs from the one mlgo-clang was built for, at byte " +
         std::to_string(I) + ":\n  compiler: ..." + Around(Got) + "\n  expected: ..." +
         Around(Want) +
         "\n(another clang-19? run `mlgo-" + CONFIG_DRIVER + " --print-launcher` again)";
}

// Serves the policy on the channel until the compiler closes it; returns the decisions made,
// or -1 if the compiler never opened the channel (e.g. -O0: no greedy allocator).
long long serveChannel(Log &L, int AdviceFd, const std::vector<size_t> &Slot) {
  std::unique_ptr<std::FILE, int (*)(std::FILE *)> DecisionLog(nullptr, std::fclose);
  if (const char *Path = std::getenv("MLGO_HOST_DECISION_LOG"))
    if (DecisionLog.reset(std::fopen(Path, "a")), !DecisionLog)
      throw Failure{std::string("cannot open MLGO_HOST_DECISION_LOG ") + Path + ": " +
                    std::strerror(errno)};
  const size_t MaxLine = 1 << 20;
  std::string Header = L.line(MaxLine);
  if (Header.empty())
    return -1;
  if (Header != CONFIG_HEADER_LINE)
    throw Failure{headerDifference(Header)};
  // Each tensor gets its own 8-byte aligned copy: in the stream a float tensor of 33
  // elements leaves the next one misaligned.
  size_t ObservationBytes = 0;
  std::vector<std::vector<uint64_t>> Storage;
  for (size_t J = 0; J < CONFIG_NUM_FEATURES; ++J) {
    ObservationBytes += CONFIG_FEATURES[J].Bytes;
    Storage.emplace_back((CONFIG_FEATURES[J].Bytes + 7) / 8 + 1);
  }
  std::vector<const void *> Inputs;
  for (size_t J : Slot)
    Inputs.push_back(Storage[J].data());
  std::string Context, Raw;
  long long Decisions = 0, Index = 0;
  for (;;) {
    std::string Line = L.line(MaxLine);
    if (Line.empty())
      break;
    if (startsWith(Line, "{\"context\":\"") && Line.size() >= 15 &&
        Line.compare(Line.size() - 3, 3, "\"}\n") == 0) {
      Context = Line.substr(12, Line.size() - 15);  // as the compiler escaped it
      continue;
    }
    if (!parseIndex(Line, Index))
      throw Failure{"unexpected event line: " + Line.substr(0, 200)};
    if (!L.exact(ObservationBytes + 1, Raw))
      throw Failure{"the stream ended inside observation " + std::to_string(Index)};
    if (Raw.back() != '\n')
      throw Failure{"no newline after observation " + std::to_string(Index)};
    for (size_t J = 0, Offset = 0; J < CONFIG_NUM_FEATURES; Offset += CONFIG_FEATURES[J++].Bytes)
      std::memcpy(Storage[J].data(), Raw.data() + Offset, CONFIG_FEATURES[J].Bytes);
    int64_t Answer = mlgo_regalloc_policy(Inputs.data(), Inputs.size());
    ++Decisions;
    // BASE.in is ours read-write, so this never fails for want of a reader, and 8 bytes
    // always fit: the compiler reads each answer before it sends the next observation.
    if (::write(AdviceFd, &Answer, sizeof Answer) != static_cast<ssize_t>(sizeof Answer))
      throw Failure{std::string("writing advice: ") + std::strerror(errno)};
    if (DecisionLog) {
      std::fprintf(DecisionLog.get(), "%s\t%lld\t%lld\n", Context.c_str(), Index,
                   static_cast<long long>(Answer));
      std::fflush(DecisionLog.get());
    }
  }
  return Decisions;
}

} // namespace

int serveCompile(const Args &Plain) {
  std::vector<size_t> Slot;
  try {
    Slot = bindPolicy();
  } catch (const Failure &F) {
    if (!fallbackAllowed())
      return say("error", "regalloc policy '%s': %s", CONFIG_REGALLOC_POLICY, F.Msg.c_str());
    say("warning", "regalloc policy '%s' cannot be served, compiling with plain clang-19 "
        "(MLGO_FALLBACK=1): %s", CONFIG_REGALLOC_POLICY, F.Msg.c_str());
    return runCompiler(Plain);
  }
  long long Timeout = openTimeout();
  if (Timeout < 0)
    return 1;
  int DirLockFd = -1;
  std::string Why, Dir = privateDir(Why, DirLockFd);
  if (Dir.empty()) {
    if (!fallbackAllowed())
      return say("error", "cannot create the channel directory: %s", Why.c_str());
    say("warning", "cannot create the channel directory, compiling with plain clang-19 "
        "(MLGO_FALLBACK=1): %s", Why.c_str());
    return runCompiler(Plain);
  }
  const std::string Base = Dir + "/channel", In = Base + ".in", Out = Base + ".out";
  int AdviceFd = -1, LogFd = -1;
  if (::mkfifo(In.c_str(), 0600) == 0 && ::mkfifo(Out.c_str(), 0600) == 0 &&
      ::pipe2(ChildPipe, O_CLOEXEC | O_NONBLOCK) == 0) {
    AdviceFd = ::open(In.c_str(), O_RDWR | O_CLOEXEC);
    LogFd = ::open(Out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  }
  int Result = 0;
  if (AdviceFd < 0 || LogFd < 0) {
    Result = say("error", "%s: cannot make the channel: %s", Dir.c_str(), std::strerror(errno));
  } else {
    Args Served = Plain;
    Served.insert(Served.begin() + 1, {"-mllvm", "-regalloc-enable-advisor=release", "-mllvm",
                                       "-regalloc-evict-interactive-channel-base=" + Base});
    sigset_t Set = handledSignals(), Old;
    ::sigprocmask(SIG_BLOCK, &Set, &Old);
    int E = spawnCompiler(Served);
    if (E == 0 && Received)  // interrupted before the compiler existed to forward it to
      ::kill(ClangPid, Received);
    ::sigprocmask(SIG_SETMASK, &Old, nullptr);
    if (E != 0) {
      Result = say("error", "cannot run %s: %s", Served[0].c_str(), std::strerror(E));
    } else {
      Log L(LogFd, Timeout, Base);
      try {
        long long Decisions = serveChannel(L, AdviceFd, Slot);
        Result = reapCompiler(false);
        if (Result == 0 && Decisions >= 0)
          summaryLine(mlgo_policy_label, Decisions, "-");
      } catch (const Failure &F) {
        bool Dead = compilerExited();
        int Code = reapCompiler(!Dead);
        if (Received)
          Result = -Received;
        else if (Dead && Code != 0)
          Result = Code;  // the compiler failed first: its message says why
        else if (fallbackAllowed()) {
          say("warning", "serving '%s' failed, compiling with plain clang-19 (MLGO_FALLBACK=1): "
              "%s", CONFIG_REGALLOC_POLICY, F.Msg.c_str());
          Result = runCompiler(Plain);
        } else {
          Result = say("error", "serving regalloc policy '%s': %s", CONFIG_REGALLOC_POLICY,
                       F.Msg.c_str());
        }
      }
    }
  }
  if (Received && Result >= 0)
    Result = -Received;
  for (int Fd : {AdviceFd, LogFd, ChildPipe[0], ChildPipe[1]})
    if (Fd >= 0)
      ::close(Fd);
  ChildPipe[0] = ChildPipe[1] = -1;
  ::unlink(In.c_str());
  ::unlink(Out.c_str());
  ::rmdir(Dir.c_str());
  ::close(DirLockFd);
  return Result;
}

} // namespace mlgo_clang

#endif // CONFIG_SERVES_REGALLOC
