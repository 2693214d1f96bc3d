// The per-call-site features mlgo's inliner plugin computes from the IR, beyond the 38 of
// LLVM's FeatureMap: each an int64 scalar, named, and documented in docs/plugin-features.md
// (which tests/test_plugin_features.py checks against this list). A policy binds them by name,
// as it binds LLVM's; the plugin computes only those its policy binds, and all of them for the
// training channel.
#ifndef MLGO_PLUGIN_FEATURES_H
#define MLGO_PLUGIN_FEATURES_H

#include "llvm/ADT/DenseMap.h"
#include "llvm/Analysis/BlockFrequencyInfo.h"
#include "llvm/Analysis/BranchProbabilityInfo.h"
#include "llvm/Analysis/FunctionPropertiesAnalysis.h"
#include "llvm/Analysis/LazyCallGraph.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/MLInlineAdvisor.h"
#include "llvm/Analysis/PostDominators.h"
#include "llvm/Analysis/TargetLibraryInfo.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/InstrTypes.h"
#include "llvm/IR/PassManager.h"

#include <cstdint>
#include <memory>

namespace mlgo {

// Name order is the order the channel sends them in, after LLVM's.
#define MLGO_SITE_FEATURES(X)                                                                  \
  X(callee_linkage)                                                                            \
  X(callee_in_comdat)                                                                          \
  X(callee_discardable)                                                                        \
  X(callee_inline_hint)                                                                        \
  X(callee_uses)                                                                               \
  X(callee_call_sites)                                                                         \
  X(callsite_is_last_use)                                                                      \
  X(caller_instruction_count)                                                                  \
  X(callee_instruction_count)                                                                  \
  X(callee_block_count)                                                                        \
  X(callee_max_loop_depth)                                                                     \
  X(callsite_loop_depth)                                                                       \
  X(callsite_relative_freq_x1000)                                                              \
  X(callee_is_recursive)                                                                       \
  X(callee_in_caller_scc)

enum class SiteFeature : size_t {
#define MLGO_ENUM(NAME) NAME,
  MLGO_SITE_FEATURES(MLGO_ENUM)
#undef MLGO_ENUM
      Count
};

inline const char *siteFeatureName(size_t I) {
  static const char *const Names[] = {
#define MLGO_NAME(NAME) #NAME,
      MLGO_SITE_FEATURES(MLGO_NAME)
#undef MLGO_NAME
  };
  return Names[I];
}

constexpr size_t NumSiteFeatures = static_cast<size_t>(SiteFeature::Count);

// callee_linkage's classes.
enum LinkageClass : int64_t {
  ExternalLinkage = 0,    // external: one definition, kept whatever happens here
  LocalLinkage = 1,       // internal or private: deleted with its last use
  LinkOnceLinkage = 2,    // linkonce, linkonce_odr (C++ inline functions, templates)
  WeakLinkage = 3,        // weak, weak_odr, common, extern_weak
  AvailableExternally = 4 // a copy for inlining only: never emitted
};

inline int64_t linkageClass(const llvm::Function &F) {
  if (F.hasLocalLinkage())
    return LocalLinkage;
  if (F.hasLinkOnceLinkage())
    return LinkOnceLinkage;
  if (F.hasAvailableExternallyLinkage())
    return AvailableExternally;
  if (F.hasWeakLinkage() || F.hasCommonLinkage() || F.hasExternalWeakLinkage())
    return WeakLinkage;
  return ExternalLinkage;
}

// Each caller's block frequencies relative to its entry, computed once per caller and dropped
// when the caller changes (an inlining into it, or the passes between inliner runs). Computed
// here, not through the analysis manager, so that the compile's later passes find no analysis
// cached that a compile without the plugin would not have.
class CallerFrequencies {
public:
  int64_t relativeX1000(const llvm::CallBase &CB, llvm::FunctionAnalysisManager &FAM) {
    llvm::Function &F = *const_cast<llvm::Function *>(CB.getCaller());
    auto &Slot = PerCaller[&F];
    if (!Slot) {
      Slot = std::make_unique<llvm::DenseMap<const llvm::BasicBlock *, int64_t>>();
      auto &LI = FAM.getResult<llvm::LoopAnalysis>(F);
      auto &DT = FAM.getResult<llvm::DominatorTreeAnalysis>(F);
      auto &TLI = FAM.getResult<llvm::TargetLibraryAnalysis>(F);
      llvm::PostDominatorTree PDT(F);
      llvm::BranchProbabilityInfo BPI(F, LI, &TLI, &DT, &PDT);
      llvm::BlockFrequencyInfo BFI(F, BPI, LI);
      uint64_t Entry = BFI.getEntryFreq().getFrequency();
      for (const llvm::BasicBlock &BB : F) {
        uint64_t Freq = BFI.getBlockFreq(&BB).getFrequency();
        // Saturating: a block deep in loops can be 2^30 times its entry.
        long double Ratio = Entry ? static_cast<long double>(Freq) * 1000 / Entry : 0;
        (*Slot)[&BB] = Ratio > 1e15L ? static_cast<int64_t>(1e15) : static_cast<int64_t>(Ratio + 0.5L);
      }
    }
    auto It = Slot->find(CB.getParent());
    return It == Slot->end() ? 0 : It->second;
  }

  void forget(const llvm::Function &F) { PerCaller.erase(&F); }
  void clear() { PerCaller.clear(); }

private:
  llvm::DenseMap<const llvm::Function *,
                 std::unique_ptr<llvm::DenseMap<const llvm::BasicBlock *, int64_t>>>
      PerCaller;
};

// What computing one call site's features needs.
struct SiteInputs {
  llvm::CallBase &CB;
  llvm::Function &Caller, &Callee;
  const llvm::MLInlineAdvisor &Advisor; // its FunctionPropertiesInfo, kept current by LLVM
  llvm::FunctionAnalysisManager &FAM;
  llvm::LazyCallGraph *CG; // null when the module's call graph is not at hand
  CallerFrequencies &Frequencies;
};

// The features read from the advisor's FunctionPropertiesInfo, which LLVM's advice keeps current
// after each inlining (a cost the plugin pays only when the policy binds one of them).
inline bool usesFunctionProperties(SiteFeature Which) {
  return Which == SiteFeature::caller_instruction_count ||
         Which == SiteFeature::callee_instruction_count ||
         Which == SiteFeature::callee_block_count || Which == SiteFeature::callee_max_loop_depth;
}

inline bool callsItself(const llvm::Function &F) {
  for (const llvm::User *U : F.users())
    if (const auto *Call = llvm::dyn_cast<llvm::CallBase>(U))
      if (Call->getCaller() == &F && Call->getCalledOperand() == &F)
        return true;
  return false;
}

inline int64_t computeSiteFeature(SiteFeature Which, SiteInputs &In) {
  using llvm::Function;
  Function &Caller = In.Caller, &Callee = In.Callee;
  switch (Which) {
  case SiteFeature::callee_linkage:
    return linkageClass(Callee);
  case SiteFeature::callee_in_comdat:
    return Callee.hasComdat();
  case SiteFeature::callee_discardable:
    return Callee.isDiscardableIfUnused();
  case SiteFeature::callee_inline_hint:
    return Callee.hasFnAttribute(llvm::Attribute::InlineHint);
  case SiteFeature::callee_uses:
    return Callee.getNumUses();
  case SiteFeature::callee_call_sites: {
    int64_t N = 0;
    for (const llvm::User *U : Callee.users())
      if (const auto *Call = llvm::dyn_cast<llvm::CallBase>(U))
        N += Call->getCalledOperand() == &Callee;
    return N;
  }
  case SiteFeature::callsite_is_last_use:
    return Callee.hasOneUse();
  case SiteFeature::caller_instruction_count:
    return In.Advisor.getCachedFPI(Caller).TotalInstructionCount;
  case SiteFeature::callee_instruction_count:
    return In.Advisor.getCachedFPI(Callee).TotalInstructionCount;
  case SiteFeature::callee_block_count:
    return In.Advisor.getCachedFPI(Callee).BasicBlockCount;
  case SiteFeature::callee_max_loop_depth:
    return In.Advisor.getCachedFPI(Callee).MaxLoopDepth;
  case SiteFeature::callsite_loop_depth:
    return In.FAM.getResult<llvm::LoopAnalysis>(Caller).getLoopDepth(In.CB.getParent());
  case SiteFeature::callsite_relative_freq_x1000:
    return In.Frequencies.relativeX1000(In.CB, In.FAM);
  case SiteFeature::callee_is_recursive:
    return callsItself(Callee);
  case SiteFeature::callee_in_caller_scc: {
    if (!In.CG)
      return 0;
    llvm::LazyCallGraph::Node *A = In.CG->lookup(Caller), *B = In.CG->lookup(Callee);
    return A && B && In.CG->lookupSCC(*A) && In.CG->lookupSCC(*A) == In.CG->lookupSCC(*B);
  }
  case SiteFeature::Count:
    break;
  }
  return 0;
}

} // namespace mlgo

#endif // MLGO_PLUGIN_FEATURES_H
