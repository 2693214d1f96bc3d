// A decision table linked into the inliner plugin: per module of a tuned project, the answer
// the search found best at each call site, which the plugin gives instead of the policy's.
// mlgo/serving/decision_table.py generates the C data from a table file (`mlgo plugin POLICY
// --decisions TABLE`, `mlgo tune`'s export); a plugin built without one has no table.
//
// A call site is named as the training channel names it (inliner_plugin.cpp's identity()):
// caller, callee, and the ordinal, how many decisions about that caller and callee the inliner
// asked for before in the same module. Replaying the table's answers makes the compile ask the
// same questions in the same order as the searched compile, so every ordinal matches and the
// object is the searched one; a site the table does not name gets the policy's answer.
// An entry may also carry the site's shape: LLVM's caller_basic_block_count,
// callee_basic_block_count and cost_estimate when the search decided it. It then answers only
// a site of that shape, so that in code changed since (another release), a site whose caller,
// callee or cost changed gets the policy's answer, not a decision made for other code. In the
// searched code itself every shape matches, as the compile is the same one.
//
// Which module a table entry is for: its key is the source file's path relative to the tuned
// project's source root ("lib/a.c"). It matches a module when the key's components are the
// last components of the module's source_filename (else of its identifier), "." components
// left out: "/any/dir/proj-2.0/lib/a.c" and "../lib/a.c" match "lib/a.c", "/x/liba.c" and
// "/x/other/a.c" do not. So the same file built in another directory, or from a later release
// unpacked elsewhere, finds its table. Several matching keys: the longest one.

#pragma once

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Analysis/InlineModelFeatureMaps.h"

#include <cstddef>
#include <cstdint>
#include <string>

// The generated data (weak: a plugin without a table links none). The layout is the one
// decision_table.py writes.
extern "C" {
struct mlgo_table_decision {
  const char *caller;
  const char *callee;
  uint32_t ordinal;
  uint32_t inline_site; // 1: inline, 0: do not
  uint32_t has_shape;   // 1: answer only a site of this shape
  int64_t shape[3];     // caller_basic_block_count, callee_basic_block_count, cost_estimate
};
struct mlgo_table_module {
  const char *path; // relative to the tuned project's source root
  const struct mlgo_table_decision *decisions;
  size_t num_decisions;
};
__attribute__((weak)) extern const struct mlgo_table_module mlgo_decision_table[];
__attribute__((weak)) extern const size_t mlgo_decision_table_modules;
}

namespace mlgo {

inline llvm::SmallVector<llvm::StringRef, 8> pathComponents(llvm::StringRef Path) {
  llvm::SmallVector<llvm::StringRef, 8> Parts, Kept;
  Path.split(Parts, '/', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef P : Parts)
    if (P != ".")
      Kept.push_back(P);
  return Kept;
}

// The number of components of Key when they are the last ones of Path, else 0.
inline size_t suffixMatch(llvm::StringRef Path, llvm::StringRef Key) {
  auto P = pathComponents(Path), K = pathComponents(Key);
  if (K.empty() || K.size() > P.size())
    return 0;
  for (size_t I = 0; I < K.size(); ++I)
    if (P[P.size() - K.size() + I] != K[I])
      return 0;
  return K.size();
}

// The table of the module with this source file name (else identifier), or null.
inline const mlgo_table_module *findTableModule(llvm::StringRef SourceFile,
                                                llvm::StringRef Identifier) {
  if (&mlgo_decision_table_modules == nullptr || &mlgo_decision_table[0] == nullptr)
    return nullptr;
  for (llvm::StringRef Name : {SourceFile, Identifier}) {
    const mlgo_table_module *Best = nullptr;
    size_t BestLength = 0;
    for (size_t I = 0; I < mlgo_decision_table_modules; ++I) {
      size_t N = suffixMatch(Name, mlgo_decision_table[I].path);
      if (N > BestLength)
        Best = &mlgo_decision_table[I], BestLength = N;
    }
    if (Best)
      return Best;
  }
  return nullptr;
}

// One module's table while the inliner runs on it: next() is called once per decision the
// plugin is asked for, in order, so that it counts ordinals as identity() does.
class ModuleDecisions {
public:
  explicit ModuleDecisions(const mlgo_table_module &M) {
    for (size_t I = 0; I < M.num_decisions; ++I) {
      const mlgo_table_decision &D = M.decisions[I];
      Answers[key(D.caller, D.callee, D.ordinal)] = &D;
    }
  }

  // The table's answer for this decision about Caller -> Callee: 1, 0, or -1 (not in it).
  // Features: LLVM's, in FeatureIndex order (the site's shape is read from them).
  int next(llvm::StringRef Caller, llvm::StringRef Callee, const int64_t *Features) {
    int Answer = peek(Caller, Callee, Features);
    ++Seen[(Caller + llvm::Twine('\0') + Callee).str()];
    Hits += Answer >= 0;
    return Answer;
  }

  // What next() will answer for the next decision about Caller -> Callee, without counting it.
  int peek(llvm::StringRef Caller, llvm::StringRef Callee, const int64_t *Features) const {
    std::string Pair = (Caller + llvm::Twine('\0') + Callee).str();
    auto Count = Seen.find(Pair);
    unsigned Ordinal = Count == Seen.end() ? 0 : Count->second;
    auto It = Answers.find(Pair + '\0' + std::to_string(Ordinal));
    if (It == Answers.end())
      return -1;
    const mlgo_table_decision &D = *It->second;
    using llvm::FeatureIndex;
    if (D.has_shape &&
        (D.shape[0] != Features[static_cast<size_t>(FeatureIndex::caller_basic_block_count)] ||
         D.shape[1] != Features[static_cast<size_t>(FeatureIndex::callee_basic_block_count)] ||
         D.shape[2] != Features[static_cast<size_t>(FeatureIndex::cost_estimate)]))
      return -1;
    return D.inline_site ? 1 : 0;
  }

  uint64_t Hits = 0; // decisions the table answered

private:
  static std::string key(llvm::StringRef Caller, llvm::StringRef Callee, unsigned Ordinal) {
    return (Caller + llvm::Twine('\0') + Callee + llvm::Twine('\0') + llvm::Twine(Ordinal)).str();
  }
  llvm::StringMap<unsigned> Seen;
  llvm::StringMap<const mlgo_table_decision *> Answers;
};

} // namespace mlgo
