// Running the compiler: in this process's place (exec), or as a child that dies with us, with
// SIGINT/SIGTERM/SIGHUP/SIGQUIT forwarded to it and SIGCHLD ending a poll() on ChildPipe.
#ifndef MLGO_CLANG_PROCESS_H
#define MLGO_CLANG_PROCESS_H

#include <csignal>

#include "mlgo_clang_common.h"

namespace mlgo_clang {

extern volatile sig_atomic_t ClangPid, Received;
extern int ChildPipe[2];

[[noreturn]] void execCompiler(const Args &Argv);
void handleSignals();
sigset_t handledSignals();
int spawnCompiler(const Args &Argv);
int reapCompiler(bool Kill);
int runCompiler(const Args &Argv);
bool compilerExited();
int finish(int Code);

} // namespace mlgo_clang

#endif // MLGO_CLANG_PROCESS_H
