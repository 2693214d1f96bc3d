// mlgo-clang / mlgo-clang++: the one per-compile program. mlgo/serving/launcher.py builds it for
// one configuration (the compiler, the regalloc policy linked in as C in the ABI of
// mlgo/policies/c_source.py, the inliner plugin, and the compiler's feature header, probed when
// it is built) into mlgo_clang_config.h; the Python `mlgo-clang` only finds or builds it and
// executes it, and `mlgo-clang --print-launcher` prints its path for CC.
//
// Per invocation:
//   - a single-source compile job (-c, one C/C++/IR source, none of the pass-through flags;
//     @response files are read for this) runs clang-19 with the eviction advisor in
//     interactive mode and serves the policy in this process on two FIFOs in a private
//     directory;
//   - anything else execs clang-19 unchanged (an -flto link gets the inliner plugin).
// The compiler dies with us (PR_SET_PDEATHSIG). SIGINT/SIGTERM/SIGHUP/SIGQUIT are forwarded
// to it; the FIFOs go on success, failure and those signals, and we then die of the same
// signal; what a kill -9 leaves, a later served compile removes. MLGO_FALLBACK=1 turns what cannot be served into a warning and a plain compile;
// nothing falls back silently.
//
// Channel (LLVM 19's interactive mode): the compiler opens BASE.in for reading, then BASE.out
// for writing; it sends one JSON header line, then per decision an optional {"context":NAME}
// line, an {"observation":N} line, the raw feature tensors in header order and a newline, and
// waits for the advice (an int64) on BASE.in. We hold BASE.in open read-write and BASE.out
// non-blocking, so neither open can block, and wait with poll() on the log and on a pipe the
// SIGCHLD handler writes to: a compiler that dies, or never opens the channel, ends the wait.
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <initializer_list>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#include "mlgo_clang_config.h"
#include "policy_binding.h"

#if CONFIG_SERVES_REGALLOC
extern "C" {
int64_t mlgo_regalloc_policy(const void *const *features, size_t num_features);
extern const char mlgo_policy_label[];
}
#endif

namespace {

using Args = std::vector<std::string>;

// One line on stderr, "mlgo-clang: KIND: ..." (KIND "error" or "warning"); returns 1, an
// error's exit status. The line goes out in one write: stderr is unbuffered, and a parallel
// build's compiles share one pipe, so piecewise writes interleave with other compiles' lines.
int say(const char *Kind, const char *Fmt, ...) __attribute__((format(printf, 2, 3)));
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

// ---- classification: the only implementation (tests/test_wrapper.py has its matrix) ----------

// Options whose value is the next argument (so it is not mistaken for an input file).
const std::initializer_list<const char *> TakesValue = {
    "-o", "-I", "-D", "-U", "-L", "-F", "-T", "-u", "-z", "-x", "-MF", "-MT", "-MQ", "-MJ",
    "-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix",
    "-iwithprefixbefore", "-isysroot", "--sysroot", "-Xclang", "-Xlinker", "-Xassembler",
    "-Xpreprocessor", "-Xarch_device", "-Xarch_host", "-mllvm", "-target", "-arch",
    "-gcc-toolchain", "-resource-dir", "-ivfsoverlay", "-working-directory",
    "-main-file-name", "-serialize-diagnostics", "-dependency-file", "-aux-triple",
    "-ccc-install-dir", "-fmodules-cache-path", "--include-directory", "--define-macro",
    "-Xopenmp-target", "-cxx-isystem", "-iframework", "-include-pch", "--param"};
// C/C++ (also preprocessed) and LLVM IR: everything that reaches the register allocator.
const std::initializer_list<const char *> SourceExtensions = {
    ".c", ".i", ".cc", ".cp", ".cpp", ".cxx", ".c++", ".C", ".CC", ".CPP", ".ii", ".cppm",
    ".bc", ".ll"};
const std::initializer_list<const char *> SourceLanguages = {"c", "c++", "cpp-output",
                                                             "c++-cpp-output", "ir"};
// Any of these makes the invocation something other than "compile one source to an object".
const std::initializer_list<const char *> PassThroughFlags = {
    "-E", "-M", "-MM", "-S", "-###", "--version", "-v", "--help", "-help", "-fsyntax-only",
    "-emit-llvm", "-emit-ast", "-print-targets", "-dumpversion", "-dumpmachine",
    "-print-search-dirs", "-print-resource-dir", "-print-libgcc-file-name", "-print-prog-name",
    "-print-file-name", "-print-multiarch", "-print-effective-triple", "-print-target-triple",
    "-fdriver-only", "-save-temps"};
// Invocations that neither compile to an object nor link.
const std::initializer_list<const char *> NoLinkFlags = {"-c", "-E", "-S", "-M", "-MM",
                                                         "-fsyntax-only", "-###", "--version"};
const int MaxResponseFileDepth = 8;

// A response file's words, split as a POSIX shell would without expansions: whitespace
// separates; '...' is literal; in "..." only \" and \\ are escapes; elsewhere a backslash makes
// the next character literal. False with Why set on a syntax error.
bool splitWords(const std::string &Text, Args &Out, const char *&Why) {
  std::string Word;
  bool InWord = false;
  for (size_t I = 0, N = Text.size(); I < N; ++I) {
    char C = Text[I];
    if (C == ' ' || C == '\t' || C == '\r' || C == '\n') {
      if (InWord)
        Out.push_back(Word);
      Word.clear();
      InWord = false;
    } else if (C == '\'' || C == '"') {
      InWord = true;
      for (++I; I < N && Text[I] != C; ++I) {
        if (C == '"' && Text[I] == '\\' && I + 1 < N && (Text[I + 1] == '"' || Text[I + 1] == '\\'))
          ++I;
        Word += Text[I];
      }
      if (I >= N)
        return Why = "no closing quotation", false;
    } else if (C == '\\') {
      InWord = true;
      if (++I >= N)
        return Why = "no escaped character", false;
      Word += Text[I];
    } else {
      InWord = true;
      Word += C;
    }
  }
  if (InWord)
    Out.push_back(Word);
  return true;
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

// Arguments with @file expanded, for classification only (clang reads the files itself).
// False after reporting an unreadable or malformed response file.
bool expandResponseFiles(const Args &In, int Depth, Args &Out) {
  for (const std::string &A : In) {
    std::string Path = A.substr(A.empty() ? 0 : 1);
    if (Depth > MaxResponseFileDepth || A[0] != '@' || !isRegularFile(Path)) {
      Out.push_back(A);
      continue;
    }
    std::string Text;
    Args Words;
    const char *Why = nullptr;
    if (!readFile(Path, Text, Why))
      return say("error", "%s: cannot read the response file: %s", Path.c_str(), Why), false;
    if (!splitWords(Text, Words, Why))
      return say("error", "%s: cannot parse the response file: %s", Path.c_str(), Why), false;
    if (!expandResponseFiles(Words, Depth + 1, Out))
      return false;
  }
  return true;
}

// The extension of the last path component: from its last dot, unless only dots precede that
// dot (".bashrc" has none).
std::string extension(const std::string &Path) {
  size_t Slash = Path.rfind('/');
  std::string Name = Slash == std::string::npos ? Path : Path.substr(Slash + 1);
  size_t Dot = Name.rfind('.');
  if (Dot == std::string::npos || Name.find_first_not_of('.') >= Dot)
    return "";
  return Name.substr(Dot);
}

// Whether the (expanded) arguments are a single-source compile job.
bool isCompileJob(const Args &A) {
  bool HasC = false;
  for (const std::string &X : A)
    HasC |= X == "-c";
  if (!HasC)
    return false;
  size_t Sources = 0, Others = 0;
  std::string Language;  // the last -x, "" if none
  for (size_t I = 0; I < A.size();) {
    const std::string &X = A[I];
    if (among(X, PassThroughFlags) || startsWith(X, "-save-temps="))
      return false;
    bool Named = (X == "-x" && I + 1 < A.size()) || (startsWith(X, "-x") && X.size() > 2);
    if (Named) {
      Language = X == "-x" ? A[I + 1] : X.substr(2);
      if (!among(Language, SourceLanguages) && Language != "none")
        return false;
    }
    if (among(X, TakesValue)) {
      I += 2;
      continue;
    }
    if (X == "-")
      ++Sources;
    else if (X[0] != '-')
      ++(among(extension(X), SourceExtensions) || among(Language, SourceLanguages) ? Sources
                                                                                  : Others);
    ++I;
  }
  return Others == 0 && Sources == 1;
}

// The -flto / -flto=MODE in effect (the last, unless -fno-lto follows), or "".
std::string ltoFlag(const Args &A) {
  std::string Found;
  for (const std::string &X : A)
    if (X == "-flto" || startsWith(X, "-flto="))
      Found = X;
    else if (X == "-fno-lto")
      Found.clear();
  return Found;
}

// Whether the driver would link: an input and none of the flags that stop before.
bool isLink(const Args &A) {
  bool Inputs = false;
  for (const std::string &X : A) {
    if (among(X, NoLinkFlags) || startsWith(X, "-print-"))
      return false;
    Inputs |= X[0] != '-';
  }
  return Inputs;
}

// ---- small services -------------------------------------------------------------------------

// This program's line of MLGO_DECISION_SUMMARY.
void summaryLine(const char *Policy, long long Decisions, const char *Notes) {
  std::string Failed = mlgo::appendSummaryLine(std::string("regalloc\t") + Policy + "\t-\t" +
                                               std::to_string(Decisions) + "\t-\t" + Notes + "\n");
  if (!Failed.empty())
    say("warning", "%s", Failed.c_str());
}

// Empty if the plugin has the content this program was built with (FNV-1a 64 of its bytes,
// launcher.fnv1a64), else what is wrong with it: a truncated plugin makes clang die in dlopen.
std::string pluginDamage(const char *Path, unsigned long long Expected) {
  std::string Bytes;
  const char *Why = nullptr;
  if (!isRegularFile(Path))
    return "it is gone";
  if (!readFile(Path, Bytes, Why))
    return Why;
  unsigned long long H = 0xcbf29ce484222325ULL;
  for (unsigned char B : Bytes)
    H = (H ^ B) * 0x100000001b3ULL;
  return H == Expected ? "" : "its content differs from when mlgo-clang was built (damaged or "
                              "replaced)";
}

std::vector<char *> argvOf(const Args &A) {
  std::vector<char *> V;
  for (const std::string &X : A)
    V.push_back(const_cast<char *>(X.c_str()));
  V.push_back(nullptr);
  return V;
}

[[noreturn]] void execCompiler(const Args &Argv) {
  ::execvp(Argv[0].c_str(), argvOf(Argv).data());
  std::exit(say("error", "cannot run %s: %s", Argv[0].c_str(), std::strerror(errno)));
}

#if CONFIG_SERVES_REGALLOC  // the rest serves the regalloc policy linked in

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

// ---- running the compiler -------------------------------------------------------------------

const int Forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
volatile sig_atomic_t ClangPid = 0, Received = 0;
int ChildPipe[2] = {-1, -1};  // SIGCHLD -> a byte here, to end a poll()

void onForwarded(int Sig) {
  if (!Received)
    Received = Sig;
  if (ClangPid > 0)
    ::kill(ClangPid, Sig);
}

void onChild(int) {
  int Saved = errno;
  if (ChildPipe[1] >= 0) {
    ssize_t Ignored = ::write(ChildPipe[1], "", 1);
    (void)Ignored;
  }
  errno = Saved;
}

sigset_t handledSignals() {
  sigset_t Set;
  sigemptyset(&Set);
  for (int S : Forwarded)
    sigaddset(&Set, S);
  sigaddset(&Set, SIGCHLD);
  return Set;
}

// Starts the compiler, which dies with us (PR_SET_PDEATHSIG): a compiler that outlives us
// (kill -9) would block for ever on a channel nobody serves, holding the caller's stdout and
// stderr; the parent check after prctl closes the window in which we die first. Called with
// the handled signals blocked, so ClangPid is set before a handler can run. Returns 0 or the
// errno of a failed exec (reported through a close-on-exec pipe).
int spawnCompiler(const Args &Argv) {
  std::vector<char *> V = argvOf(Argv);
  int Report[2];
  if (::pipe2(Report, O_CLOEXEC) != 0)
    return errno;
  pid_t Parent = ::getpid(), Child = ::fork();
  if (Child < 0) {
    int E = errno;
    ::close(Report[0]);
    ::close(Report[1]);
    return E;
  }
  if (Child == 0) {
    for (int S : Forwarded)
      ::signal(S, SIG_DFL);
    ::signal(SIGCHLD, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t None;
    sigemptyset(&None);
    ::sigprocmask(SIG_SETMASK, &None, nullptr);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != Parent)
      ::_exit(127);
    ::execvp(V[0], V.data());
    int E = errno;
    ssize_t Ignored = ::write(Report[1], &E, sizeof E);
    (void)Ignored;
    ::_exit(127);
  }
  ::close(Report[1]);
  int E = 0;
  ssize_t Got;
  while ((Got = ::read(Report[0], &E, sizeof E)) < 0 && errno == EINTR) {
  }
  ::close(Report[0]);
  if (Got == static_cast<ssize_t>(sizeof E)) {
    while (::waitpid(Child, nullptr, 0) < 0 && errno == EINTR) {
    }
    return E;
  }
  ClangPid = Child;
  return 0;
}

// Reaps the compiler (killing it first if `Kill`); its exit code, or -N if signal N ended it.
// ClangPid is cleared before the reap, so a handler never signals a recycled pid.
int reapCompiler(bool Kill) {
  sigset_t Set = handledSignals(), Old;
  ::sigprocmask(SIG_BLOCK, &Set, &Old);
  pid_t P = ClangPid;
  ClangPid = 0;
  ::sigprocmask(SIG_SETMASK, &Old, nullptr);
  if (P <= 0)
    return 0;
  if (Kill)
    ::kill(P, SIGKILL);
  int Status = 0;
  while (::waitpid(P, &Status, 0) < 0 && errno == EINTR) {
  }
  return WIFSIGNALED(Status) ? -WTERMSIG(Status) : WEXITSTATUS(Status);
}

int runCompiler(const Args &Argv) {
  sigset_t Set = handledSignals(), Old;
  ::sigprocmask(SIG_BLOCK, &Set, &Old);
  int E = spawnCompiler(Argv);
  ::sigprocmask(SIG_SETMASK, &Old, nullptr);
  if (E != 0)
    return say("error", "cannot run %s: %s", Argv[0].c_str(), std::strerror(E));
  int Code = reapCompiler(false);
  return Received ? -Received : Code;
}

// Whether the compiler has exited (not reaped: its pid stays ours until reapCompiler).
bool compilerExited() {
  siginfo_t Info;
  std::memset(&Info, 0, sizeof Info);
  return ClangPid <= 0 ||
         (::waitid(P_PID, ClangPid, &Info, WEXITED | WNOHANG | WNOWAIT) == 0 && Info.si_pid != 0);
}

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

// Exit like clang did: with its status, or killed by the same signal, so that make and shells
// report an interrupted compile as interrupted. Called after all clean-up.
int finish(int Code) {
  if (Code >= 0)
    return Code;
  ::signal(-Code, SIG_DFL);
  sigset_t Set;
  sigemptyset(&Set);
  sigaddset(&Set, -Code);
  ::sigprocmask(SIG_UNBLOCK, &Set, nullptr);
  ::raise(-Code);
  return 128 - Code;
}

#endif  // CONFIG_SERVES_REGALLOC

// What the environment asks for at compile time vs what this program serves: nullptr if they
// agree, else the environment's. Unset or empty asks for nothing in particular (the program
// serves what it was made for): an empty MLGO_REGALLOC_POLICY is never a path.
const char *mismatch(const char *Variable, const char *Served) {
  const char *Wanted = std::getenv(Variable);
  if (!Wanted || !*Wanted)
    return nullptr;
  return Served && std::strcmp(Served, Wanted) == 0 ? nullptr : Wanted;
}

} // namespace

int main(int Argc, char **Argv) {
  const char *Override = std::getenv(CONFIG_COMPILER_ENV);
  Args Plain = {Override && *Override ? Override : CONFIG_COMPILER};
  Args Extra;  // the plugin flag, between the compiler and the user's arguments
  Args User(Argv + 1, Argv + Argc), Expanded;
  if (!expandResponseFiles(User, 0, Expanded))
    return 1;
  bool Job = isCompileJob(Expanded);
  std::string Lto = ltoFlag(Expanded);
  // An -flto link: the whole program's code generation happens here, inside the linker.
  bool LtoLink = !Job && !Lto.empty() && isLink(Expanded);
  auto compilerArgs = [&]() {
    Args A = Plain;
    A.insert(A.end(), Extra.begin(), Extra.end());
    A.insert(A.end(), User.begin(), User.end());
    return A;
  };
  if (!Job && !LtoLink)
    execCompiler(compilerArgs());
  const bool RegallocAsked = CONFIG_SERVES_REGALLOC || CONFIG_REGALLOC_UNAVAILABLE;
  if (LtoLink && RegallocAsked) {
    say("warning", "%s link: code generation (and register allocation) runs in the linker, which "
        "mlgo does not serve: the regalloc policy '%s' is not applied to this program",
        Lto.c_str(), CONFIG_REGALLOC_POLICY);
    summaryLine(CONFIG_REGALLOC_POLICY, 0, "lto-link-not-served");
  }
  bool Lld = false;  // only lld loads pass plugins at the link
  for (const std::string &X : Expanded)
    Lld |= X == "-fuse-ld=lld";

  const char *Other = mismatch("MLGO_INLINE_POLICY", CONFIG_INLINE_POLICY);
  const char *ServedInline = CONFIG_INLINE_POLICY ? CONFIG_INLINE_POLICY : "(none)";
  if (Other) {
    if (!fallbackAllowed())
      return say("error", "%s serves inline policy '%s', but MLGO_INLINE_POLICY is '%s'; make one "
                 "for it with the variable set when printing: `MLGO_INLINE_POLICY=%s mlgo-%s "
                 "--print-launcher`", Argv[0], ServedInline, Other, Other, CONFIG_DRIVER);
    say("warning", "%s serves inline policy '%s', not MLGO_INLINE_POLICY '%s'; using clang's own "
        "inliner (MLGO_FALLBACK=1)", Argv[0], ServedInline, Other);
  } else if (CONFIG_INLINE_POLICY && LtoLink && !Lld) {
    say("warning", "%s link without -fuse-ld=lld: the inline policy '%s' is not applied to the "
        "link's inlining (only lld can load the plugin)", Lto.c_str(), CONFIG_INLINE_POLICY);
  } else if (CONFIG_INLINE_POLICY) {
    std::string Bad = CONFIG_PLUGIN_UNAVAILABLE ? CONFIG_PLUGIN_UNAVAILABLE
                                                : pluginDamage(CONFIG_PLUGIN, CONFIG_PLUGIN_FNV1A64);
    if (!CONFIG_PLUGIN_UNAVAILABLE && !Bad.empty())
      Bad = std::string(CONFIG_PLUGIN) + ": " + Bad;
    if (Bad.empty())
      Extra.push_back((LtoLink ? "-Wl,--load-pass-plugin=" : "-fpass-plugin=") +
                      std::string(CONFIG_PLUGIN));
    else if (!fallbackAllowed())
      return say("error", "inliner plugin for '%s': %s; make mlgo-clang again with `mlgo-%s "
                 "--print-launcher`", CONFIG_INLINE_POLICY, Bad.c_str(), CONFIG_DRIVER);
    else
      say("warning", "inliner plugin for '%s' unavailable, using clang's own inliner "
          "(MLGO_FALLBACK=1): %s", CONFIG_INLINE_POLICY, Bad.c_str());
  }
  if (LtoLink)
    execCompiler(compilerArgs());

  Other = mismatch("MLGO_REGALLOC_POLICY", CONFIG_REGALLOC_POLICY);
  if (Other) {
    if (!fallbackAllowed())
      return say("error", "%s serves regalloc policy '%s', but MLGO_REGALLOC_POLICY is '%s'; make "
                 "one for it with the variable set when printing: `MLGO_REGALLOC_POLICY=%s "
                 "mlgo-%s --print-launcher`", Argv[0], CONFIG_REGALLOC_POLICY, Other, Other,
                 CONFIG_DRIVER);
    say("warning", "%s serves regalloc policy '%s', not MLGO_REGALLOC_POLICY '%s'; compiling with "
        "plain clang-19 (MLGO_FALLBACK=1)", Argv[0], CONFIG_REGALLOC_POLICY, Other);
    execCompiler(compilerArgs());
  }
  if (!Lto.empty() && RegallocAsked) {
    // The object is bitcode: registers are allocated at the link (warned about there).
    say("warning", "%s: this compile makes bitcode and its registers are allocated at the link, "
        "which mlgo does not serve: the regalloc policy '%s' is not applied", Lto.c_str(),
        CONFIG_REGALLOC_POLICY);
    summaryLine(CONFIG_REGALLOC_POLICY, 0, "lto-not-served");
    execCompiler(compilerArgs());
  }
  if (CONFIG_REGALLOC_UNAVAILABLE) {
    if (!fallbackAllowed())
      return say("error", "regalloc policy '%s': %s", CONFIG_REGALLOC_POLICY,
                 CONFIG_REGALLOC_UNAVAILABLE);
    say("warning", "regalloc policy '%s' unavailable, compiling with plain clang-19 "
        "(MLGO_FALLBACK=1): %s", CONFIG_REGALLOC_POLICY, CONFIG_REGALLOC_UNAVAILABLE);
    execCompiler(compilerArgs());
  }
#if CONFIG_SERVES_REGALLOC
  {
    // SIGPIPE stays default in the compiler (spawnCompiler); here a closed pipe is an error.
    ::signal(SIGPIPE, SIG_IGN);
    struct sigaction SA;
    std::memset(&SA, 0, sizeof SA);
    sigemptyset(&SA.sa_mask);
    SA.sa_handler = onForwarded;
    for (int S : Forwarded)
      ::sigaction(S, &SA, nullptr);
    SA.sa_handler = onChild;
    SA.sa_flags = SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &SA, nullptr);
    return finish(serveCompile(compilerArgs()));
  }
#endif
  execCompiler(compilerArgs());
}
