// Running the compiler (mlgo_clang_process.h).
#include "mlgo_clang_process.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mlgo_clang {

volatile sig_atomic_t ClangPid = 0, Received = 0;
int ChildPipe[2] = {-1, -1};  // SIGCHLD -> a byte here, to end a poll()

namespace {

const int Forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

std::vector<char *> argvOf(const Args &A) {
  std::vector<char *> V;
  for (const std::string &X : A)
    V.push_back(const_cast<char *>(X.c_str()));
  V.push_back(nullptr);
  return V;
}

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

} // namespace

[[noreturn]] void execCompiler(const Args &Argv) {
  ::execvp(Argv[0].c_str(), argvOf(Argv).data());
  std::exit(say("error", "cannot run %s: %s", Argv[0].c_str(), std::strerror(errno)));
}

// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the compiler, and makes SIGCHLD end a poll().
void handleSignals() {
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

} // namespace mlgo_clang
