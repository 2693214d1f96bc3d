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
// signal. MLGO_FALLBACK=1 turns what cannot be served into a warning and a plain compile;
// nothing falls back silently.
//
// This file decides what to do with an invocation; the parts, compiled together with it:
//   mlgo_clang_args.cpp      @response files, and telling compile jobs from everything else
//   mlgo_clang_process.cpp   running the compiler, signals
//   mlgo_clang_channel.cpp   serving the policy on the compiler's interactive channel
//   mlgo_clang_common.cpp    messages, MLGO_FALLBACK, MLGO_DECISION_SUMMARY, small helpers
#include <cstdlib>
#include <cstring>
#include <string>

#include "mlgo_clang_args.h"
#include "mlgo_clang_channel.h"
#include "mlgo_clang_common.h"
#include "mlgo_clang_config.h"
#include "mlgo_clang_process.h"

using namespace mlgo_clang;

namespace {

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
  handleSignals();
  return finish(serveCompile(compilerArgs()));
#endif
  execCompiler(compilerArgs());
}
