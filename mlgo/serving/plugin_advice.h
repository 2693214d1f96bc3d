// The inliner plugin's advisor base: LLVM's MLInlineAdvisor with its per-call-site work done
// only for the features the served policy binds.
//
// LLVM's MLInlineAdvisor::getAdviceImpl computes every one of its 38 features before it asks the
// model: a full inline-cost estimate and the cost-feature vector (each a walk of the callee with
// the call site's constants propagated) and the FunctionPropertiesInfo of caller and callee, kept
// current after each inlining. That work is most of the plugin's compile-time cost, and a policy
// that binds few features needs little of it. LazyFeatureAdvisor answers in one of three modes,
// fixed per module by what the policy binds (FeatureNeeds):
//
//   llvm     LLVM's own getAdviceImpl computes everything: the training channel and the decision
//            log (they send every feature), and LLVM options this file does not reimplement
//            (-ml-inliner-skip-policy, -ml-advisor-size-increase-threshold,
//            -ml-advisor-keep-fpi-cache).
//   tracked  the decision flow of LLVM's advisor and its FunctionPropertiesInfo cache of caller and
//            callee, but the cost features only when bound. Also for a policy binding node_count
//            or edge_count: LLVM's advisor keeps those module counts in this mode as in its own
//            flow (its onPassEntry/onPassExit run), from each function's FunctionPropertiesInfo,
//            and the plugin reads them (llvmModuleCounts below). After an inlining, LLVM's advice
//            rebuilds the caller's dominator tree and loop info to update its
//            FunctionPropertiesInfo; on LLVM 19 the plugin's own advice (CountedAdvice) instead
//            updates the fields the features read from the blocks the inlining changed, keeps
//            the caller's reachable blocks itself, and does the rest of LLVM's
//            onSuccessfulInlining (the IR growth limit, node and edge counts), unless the policy
//            binds callee_max_loop_depth (a loop field). MLGO_PLUGIN_CHECK_COUNTS=1 also runs
//            LLVM's own update on a copy and a dominator tree beside each reachability answer,
//            and counts the differences (count_mismatches, reachability_mismatches, below).
//   lean     no FunctionPropertiesInfo at all: a plain InlineAdvice subclass that tracks the
//            module's IR size itself for the growth limit.
//
// Whatever the mode, a call site gets the same answer as from LLVM's flow: unreachable call
// sites, never-inline and recursive calls, always-inline calls and the module-growth limit are
// handled the same way, and a call site LLVM's cost analysis cannot analyse (it returns no
// estimate) is never given to the policy: the estimate is computed for every call site the policy
// would see, bound or not, because it is that veto. The cost features' own failure is a veto in
// LLVM's flow too; when the policy binds no cost feature the plugin does not compute them, and
// counts (MLGO_PLUGIN_FEATURE_WORK, below) the call sites where the estimate succeeded and the
// features failed whenever it computes both, so that the assumption that the two analyses fail
// together stays checked.
//
// MLGO_PLUGIN_FEATURE_WORK=FILE appends one line per module: the mode and how many call sites
// each group of work was done for (tests read it to check that unbound groups cost nothing).
#ifndef MLGO_PLUGIN_ADVICE_H
#define MLGO_PLUGIN_ADVICE_H

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Analysis/AssumptionCache.h"
#include "llvm/Analysis/FunctionPropertiesAnalysis.h"
#include "llvm/Analysis/InlineAdvisor.h"
#include "llvm/Analysis/InlineCost.h"
#include "llvm/Analysis/InlineModelFeatureMaps.h"
#include "llvm/Analysis/LazyCallGraph.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/MLInlineAdvisor.h"
#include "llvm/Analysis/MLModelRunner.h"
#include "llvm/Analysis/OptimizationRemarkEmitter.h"
#include "llvm/Analysis/TargetTransformInfo.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/IR/Constant.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

// Included after policy_binding.h (appendLine), which its includer must see first.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace mlgo {

// What a module's decisions need computed, from the features the policy binds.
struct FeatureNeeds {
  bool AllByLLVM = false;    // llvm mode
  bool Tracked = false;      // caller and callee FunctionPropertiesInfo, kept current
  bool CostEstimate = false; // as a feature (it is computed as the veto anyway)
  bool CostFeatures = false;
  bool ModuleCounts = false; // node_count, edge_count (tracked)
  bool LoopProperties = false; // FunctionPropertiesInfo's loop fields (tracked by LLVM's advice)
  // A decision table serves the module: the cost features are computed after the table is
  // asked, and only for the call sites it does not answer (the policy decides those).
  bool CostFeaturesAfterTable = false;
};

enum class AdvisorMode { LLVM, Tracked, Lean };

inline const char *modeName(AdvisorMode M) {
  return M == AdvisorMode::LLVM ? "llvm" : M == AdvisorMode::Tracked ? "tracked" : "lean";
}

// The needs of binding LLVM's feature number I (its position in LLVM's feature list).
inline void addLLVMFeatureNeed(size_t I, FeatureNeeds &N) {
  using llvm::FeatureIndex;
  if (I < static_cast<size_t>(llvm::InlineCostFeatureIndex::NumberOfFeatures)) {
    N.CostFeatures = true;
    return;
  }
  switch (static_cast<FeatureIndex>(I)) {
  case FeatureIndex::cost_estimate:
    N.CostEstimate = true;
    return;
  case FeatureIndex::node_count:
  case FeatureIndex::edge_count:
    N.Tracked = true;
    N.ModuleCounts = true;
    return;
  case FeatureIndex::callee_basic_block_count:
  case FeatureIndex::caller_users:
  case FeatureIndex::caller_conditionally_executed_blocks:
  case FeatureIndex::caller_basic_block_count:
  case FeatureIndex::callee_conditionally_executed_blocks:
  case FeatureIndex::callee_users:
    N.Tracked = true;
    return;
  default: // callsite_height, nr_ctant_params, is_callee/caller_avail_external: call-site local
    return;
  }
}

// LLVM's options whose effect lives in MLInlineAdvisor's own flow: given one, LLVM decides
// everything as it would.
inline bool llvmAdvisorOptionGiven() {
  const auto &Options = llvm::cl::getRegisteredOptions(); // a StringMap before LLVM 22
  for (const char *Name : {"ml-inliner-skip-policy", "ml-advisor-size-increase-threshold",
                           "ml-advisor-keep-fpi-cache"}) {
    auto It = Options.find(Name);
    if (It != Options.end() && It->second->getNumOccurrences() > 0)
      return true;
  }
  return false;
}

// LLVM's advisor keeps node_count and edge_count in private members, which it updates in the
// tracked flow exactly as in its own (the same onPassEntry, onPassExit and onSuccessfulInlining
// run, on the same FunctionPropertiesInfo), so the plugin reads them rather than keeping a second
// copy that could drift from LLVM's. An explicit instantiation may name a private member (the
// C++ standard exempts the names in one from access checking), and a friend defined in it hands
// the member pointer out; the plugin is compiled against the headers of the LLVM it is loaded
// into (checkLLVMVersion), so the members are the ones that object has. A later LLVM that renames
// them fails this build rather than reading something else.
template <typename Tag, typename Tag::Type Member> struct ExposePrivate {
  friend typename Tag::Type memberOf(Tag) { return Member; }
};
// NAME##Member{} is the tag of MLInlineAdvisor's private member NAME, of the type given last.
#define MLGO_EXPOSE_MEMBER(NAME, ...)                                                              \
  struct NAME##Member {                                                                            \
    using Type = __VA_ARGS__ llvm::MLInlineAdvisor::*;                                             \
    friend Type memberOf(NAME##Member);                                                            \
  };                                                                                               \
  template struct ExposePrivate<NAME##Member, &llvm::MLInlineAdvisor::NAME>;

MLGO_EXPOSE_MEMBER(NodeCount, int64_t)
MLGO_EXPOSE_MEMBER(EdgeCount, int64_t)

struct ModuleCounts {
  int64_t Nodes, Edges;
};

inline ModuleCounts llvmModuleCounts(const llvm::MLInlineAdvisor &A) {
  return {A.*memberOf(NodeCountMember{}), A.*memberOf(EdgeCountMember{})};
}

// The rest of the state LLVM's onSuccessfulInlining, onPassEntry and onPassExit update, for the
// counted flow (the same types in LLVM 19 and 22).
MLGO_EXPOSE_MEMBER(FPICache, std::map<const llvm::Function *, llvm::FunctionPropertiesInfo>)
MLGO_EXPOSE_MEMBER(InitialIRSize, const int32_t)
MLGO_EXPOSE_MEMBER(CurrentIRSize, int32_t)
MLGO_EXPOSE_MEMBER(ForceStop, bool)
MLGO_EXPOSE_MEMBER(NodesInLastSCC, llvm::SmallPtrSet<const llvm::LazyCallGraph::Node *, 1>)
MLGO_EXPOSE_MEMBER(DeadFunctions, llvm::DenseSet<llvm::Function *>)
MLGO_EXPOSE_MEMBER(FunctionLevels, std::map<const llvm::LazyCallGraph::Node *, unsigned>)
MLGO_EXPOSE_MEMBER(AllNodes, llvm::DenseSet<const llvm::LazyCallGraph::Node *>)
MLGO_EXPOSE_MEMBER(EdgesOfLastSeenNodes, int64_t)
#undef MLGO_EXPOSE_MEMBER

// LLVM 19's onSuccessfulInlining is what CountedAdvice repeats step for step; LLVM 22's differs
// (it updates the caller's dominator tree in place), so there the tracked mode keeps LLVM's
// advice.
constexpr bool CountedFlowAvailable = LLVM_VERSION_MAJOR == 19;

// The FunctionPropertiesInfo fields LLVM's advisor and the inliner features read, as sums over
// blocks counted the way LLVM's FunctionPropertiesAnalysis counts a block (the loop fields,
// MaxLoopDepth and TopLevelLoopCount, need LoopInfo and are not kept).
struct PropertyCounts {
  int64_t Blocks = 0, FromConditional = 0, LocalCalls = 0, Loads = 0, Stores = 0, Size = 0;

  void add(const llvm::BasicBlock &BB, int64_t Sign) {
    Blocks += Sign;
    const llvm::Instruction *Term = BB.getTerminator();
    if (const auto *Br = llvm::dyn_cast_or_null<llvm::BranchInst>(Term)) {
      if (Br->isConditional())
        FromConditional += Sign * Br->getNumSuccessors();
    } else if (const auto *Sw = llvm::dyn_cast_or_null<llvm::SwitchInst>(Term)) {
      FromConditional += Sign * (Sw->getNumCases() + (Sw->getDefaultDest() != nullptr));
    }
    for (const llvm::Instruction &I : BB) {
      if (const auto *Call = llvm::dyn_cast<llvm::CallBase>(&I)) {
        const llvm::Function *Target = Call->getCalledFunction();
        LocalCalls += Sign * (Target && !Target->isIntrinsic() && !Target->isDeclaration());
      }
      Loads += Sign * (I.getOpcode() == llvm::Instruction::Load);
      Stores += Sign * (I.getOpcode() == llvm::Instruction::Store);
    }
    Size += Sign * static_cast<int64_t>(BB.sizeWithoutDebug());
  }

  static PropertyCounts of(const llvm::FunctionPropertiesInfo &FPI) {
    return {FPI.BasicBlockCount, FPI.BlocksReachedFromConditionalInstruction,
            FPI.DirectCallsToDefinedFunctions, FPI.LoadInstCount, FPI.StoreInstCount,
            FPI.TotalInstructionCount};
  }

  void writeTo(const llvm::Function &F, llvm::FunctionPropertiesInfo &Out) const {
    Out.BasicBlockCount = Blocks;
    Out.BlocksReachedFromConditionalInstruction = FromConditional;
    Out.Uses = !F.hasLocalLinkage() + static_cast<int64_t>(F.getNumUses());
    Out.DirectCallsToDefinedFunctions = LocalCalls;
    Out.LoadInstCount = Loads;
    Out.StoreInstCount = Stores;
    Out.TotalInstructionCount = Size;
  }
};

// The blocks of F reachable from its entry (the ones a dominator tree of F holds).
inline void reachableBlocks(const llvm::Function &F,
                            llvm::DenseSet<const llvm::BasicBlock *> &Out) {
  llvm::SmallVector<const llvm::BasicBlock *, 32> Pending{&F.getEntryBlock()};
  Out.insert(&F.getEntryBlock());
  while (!Pending.empty())
    for (const llvm::BasicBlock *Next : llvm::successors(Pending.pop_back_val()))
      if (Out.insert(Next).second)
        Pending.push_back(Next);
}

// Those fields counted over all of F's blocks reachable from its entry.
inline PropertyCounts reachableCounts(const llvm::Function &F) {
  llvm::DenseSet<const llvm::BasicBlock *> Reached;
  reachableBlocks(F, Reached);
  PropertyCounts Counts;
  for (const llvm::BasicBlock *BB : Reached)
    Counts.add(*BB, 1);
  return Counts;
}

// A function's property counts over its blocks reachable from the entry (found by a walk, with
// no dominator tree or loop info) and its uses, as of when they were computed. The counted flow
// asks for these where LLVM's advisor asks for FunctionPropertiesAnalysis, and they are dropped
// exactly when that analysis would be (the same preservation check), so a cached result is as
// old as LLVM's cached FunctionPropertiesInfo would be: LLVM reads a callee's `Uses` from when
// its properties were last computed, not from the moment of the decision.
class PropertyCountsAnalysis : public llvm::AnalysisInfoMixin<PropertyCountsAnalysis> {
public:
  static inline llvm::AnalysisKey Key;

  struct Result {
    PropertyCounts Counts;
    int64_t Uses = 0;
    bool invalidate(llvm::Function &, const llvm::PreservedAnalyses &PA,
                    llvm::FunctionAnalysisManager::Invalidator &) {
      auto Checker = PA.getChecker<llvm::FunctionPropertiesAnalysis>();
      return !Checker.preserved() &&
             !Checker.preservedSet<llvm::AllAnalysesOn<llvm::Function>>();
    }
  };

  Result run(llvm::Function &F, llvm::FunctionAnalysisManager &) {
    return {reachableCounts(F), !F.hasLocalLinkage() + static_cast<int64_t>(F.getNumUses())};
  }
};

inline bool sameCountedFields(const llvm::FunctionPropertiesInfo &A,
                              const llvm::FunctionPropertiesInfo &B) {
  return A.BasicBlockCount == B.BasicBlockCount &&
         A.BlocksReachedFromConditionalInstruction == B.BlocksReachedFromConditionalInstruction &&
         A.Uses == B.Uses && A.DirectCallsToDefinedFunctions == B.DirectCallsToDefinedFunctions &&
         A.LoadInstCount == B.LoadInstCount && A.StoreInstCount == B.StoreInstCount &&
         A.TotalInstructionCount == B.TotalInstructionCount;
}

inline bool checkCountsRequested() {
  const char *V = std::getenv("MLGO_PLUGIN_CHECK_COUNTS");
  return V && std::string(V) == "1";
}

// How many call sites each group of work was done for, in one module.
struct WorkCounts {
  uint64_t Advised = 0;           // call sites given to the policy
  uint64_t Estimates = 0;         // getInliningCostEstimate
  uint64_t CostFeatureSets = 0;   // getInliningCostFeatures, for call sites the policy sees
  uint64_t MandatoryChecks = 0;   // getInliningCostFeatures, for always-inline call sites
  uint64_t TrackedAdvice = 0;     // advice keeping caller and callee FunctionPropertiesInfo
  uint64_t FeaturesOnlyVetoes = 0; // estimate succeeded, cost features failed (both computed)
  uint64_t TableAnswered = 0;      // call sites a decision table answered (no cost features)
  uint64_t Recounted = 0;          // inlinings whose caller CountedAdvice counted
  uint64_t CountedAfresh = 0;      // of those, whose whole caller it counted again
  uint64_t CountMismatches = 0;    // of those, differing from LLVM's update (check mode)
  uint64_t ReachabilityMismatches = 0; // call sites the kept reachable blocks and a dominator
                                       // tree built then disagree on (check mode)
};

// Sum of a function's instructions without debug intrinsics, as LLVM's FunctionPropertiesInfo
// counts TotalInstructionCount, which is the IR size of MLInlineAdvisor's growth limit.
inline int64_t irSize(const llvm::Function &F) {
  int64_t N = 0;
  for (const llvm::BasicBlock &BB : F)
    N += BB.sizeWithoutDebug();
  return N;
}

class LazyFeatureAdvisor;

// Lean mode's advice: tells the advisor the sizes before and after a successful inlining.
class LeanAdvice final : public llvm::InlineAdvice {
public:
  LeanAdvice(LazyFeatureAdvisor *Advisor, llvm::CallBase &CB, llvm::OptimizationRemarkEmitter &ORE,
             bool Inline);

private:
  void recordInliningImpl() override;
  void recordInliningWithCalleeDeletedImpl() override;
  LazyFeatureAdvisor *Owner;
  int64_t CallerSizeBefore, CalleeSizeBefore;
};

// Tracked mode's advice on LLVM 19: what LLVM's MLInlineAdvice records before an inlining (the
// IR sizes and local calls of caller and callee from the advisor's cache), without its
// FunctionPropertiesUpdater; LazyFeatureAdvisor::countedInlined does the rest.
//
// An inlining changes the caller only from the call site's block on: the block is split, the
// callee's blocks come between its two halves, the second half branches where the block did,
// and allocas may move to the entry block. So before it the advice takes the counts of the call
// site's block, the entry block and the block's successors (for an invoke, also those of its
// unwind destination: inlined calls may unwind there and split it) off the caller's; after it
// walks forward from the call site's block, stopping at those successors, and adds back what it
// walked, and the entry block. When the walk reaches every one of the successors they are as
// reachable as before, and so is every other block of the caller: the counts are exact. When it
// does not (a callee that never returns, a landing pad no longer used), the caller is counted
// afresh.
class CountedAdvice final : public llvm::InlineAdvice {
public:
  CountedAdvice(LazyFeatureAdvisor *Advisor, llvm::CallBase &CB,
                llvm::OptimizationRemarkEmitter &ORE, bool Inline);

private:
  friend class LazyFeatureAdvisor;
  void recordInliningImpl() override;
  void recordInliningWithCalleeDeletedImpl() override;
  LazyFeatureAdvisor *Owner;
  int64_t CallerIRSize, CalleeIRSize, CallerAndCalleeEdges;
  llvm::BasicBlock *CallSiteBlock = nullptr;
  llvm::SmallPtrSet<const llvm::BasicBlock *, 4> Boundary; // its successors, not itself
  PropertyCounts Unchanged; // the caller's counts without the blocks the inlining may change
  // Check mode: LLVM's own update, run on a copy of the caller's cached properties.
  std::unique_ptr<llvm::FunctionPropertiesInfo> CheckedCopy;
  std::optional<llvm::FunctionPropertiesUpdater> CheckedUpdate;
};

class LazyFeatureAdvisor : public llvm::MLInlineAdvisor {
public:
#if LLVM_VERSION_MAJOR >= 22
  using RunnerFactory =
      std::function<std::unique_ptr<llvm::MLModelRunner>(const std::vector<llvm::TensorSpec> &)>;
#else
  using RunnerFactory = std::unique_ptr<llvm::MLModelRunner>;
#endif

  LazyFeatureAdvisor(llvm::Module &M, llvm::ModuleAnalysisManager &MAM, RunnerFactory Runner,
                     std::function<bool(llvm::CallBase &)> GetDefault, FeatureNeeds Needs)
      : llvm::MLInlineAdvisor(M, MAM, std::move(Runner), std::move(GetDefault)),
        Needs(Needs), Mode(Needs.AllByLLVM || llvmAdvisorOptionGiven() ? AdvisorMode::LLVM
                           : Needs.Tracked                             ? AdvisorMode::Tracked
                                                                       : AdvisorMode::Lean),
        Counted(Mode == AdvisorMode::Tracked && CountedFlowAvailable && !Needs.LoopProperties),
        CheckCounts(Counted && checkCountsRequested()),
        CallGraph(MAM.getResult<llvm::LazyCallGraphAnalysis>(M)) {
    if (Counted) // (a no-op when already registered)
      FAM.registerPass([] { return PropertyCountsAnalysis(); });
    if (Mode == AdvisorMode::Lean)
      for (llvm::Function &F : M)
        if (!F.isDeclaration())
          InitialIRSize += irSize(F);
    CurrentIRSize = InitialIRSize;
  }

  ~LazyFeatureAdvisor() override;

  AdvisorMode mode() const { return Mode; }

  void onPassEntry(llvm::LazyCallGraph::SCC *SCC) override {
    Reachable.clear(); // the function passes between inliner runs change functions
    if (Counted)
      return countedPassEntry(SCC);
    if (Mode != AdvisorMode::Lean)
      return llvm::MLInlineAdvisor::onPassEntry(SCC);
    Sizes.clear();
  }

  void onPassExit(llvm::LazyCallGraph::SCC *SCC) override {
    Reachable.clear();
    if (Counted)
      return countedPassExit(SCC);
    if (Mode != AdvisorMode::Lean)
      return llvm::MLInlineAdvisor::onPassExit(SCC);
    Sizes.clear();
  }

  // The caller's or callee's entry of LLVM's FunctionPropertiesInfo cache, filled as LLVM's
  // getCachedFPI fills it, but from PropertyCountsAnalysis where LLVM would compute
  // FunctionPropertiesAnalysis (its results computed when the advisor was made are read as LLVM
  // reads them). The loop fields of an entry so filled are 0: the counted flow is not used
  // for a policy that reads them.
  llvm::FunctionPropertiesInfo &properties(llvm::Function &F) {
    auto &Cache = this->*memberOf(FPICacheMember{});
    auto [It, New] = Cache.try_emplace(&F);
    if (!New)
      return It->second;
    if (const auto *Made = FAM.getCachedResult<llvm::FunctionPropertiesAnalysis>(F)) {
      It->second = *Made;
    } else {
      const auto &R = FAM.getResult<PropertyCountsAnalysis>(F);
      R.Counts.writeTo(F, It->second);
      It->second.Uses = R.Uses;
    }
    return It->second;
  }

  // Called after an inlining into Caller, whatever the mode.
  virtual void callerChanged(const llvm::Function &Caller) {}

  int64_t cachedIRSize(llvm::Function &F) {
    auto [It, New] = Sizes.try_emplace(&F, 0);
    if (New)
      It->second = irSize(F);
    return It->second;
  }

  bool leanForcedToStop() const { return LeanForceStop; }

  bool checkingCounts() const { return CheckCounts; }

  // What LLVM's advisor drops of the caller's analyses after each inlining it tracks.
  void invalidateAfterInlining(llvm::Function &Caller) {
    llvm::PreservedAnalyses PA = llvm::PreservedAnalyses::all();
    PA.abandon<llvm::FunctionPropertiesAnalysis>();
    PA.abandon<llvm::DominatorTreeAnalysis>();
    PA.abandon<llvm::LoopAnalysis>();
    FAM.invalidate(Caller, PA);
  }

  // LLVM's onSuccessfulInlining, with the caller's FunctionPropertiesInfo counted by the plugin
  // (CountedAdvice) rather than LLVM's updater.
  void countedInlined(CountedAdvice &A, llvm::Function &Caller, llvm::Function &Callee,
                      bool CalleeDeleted) {
    invalidateAfterInlining(Caller);
    llvm::FunctionPropertiesInfo &CallerFPI = properties(Caller);
    PropertyCounts Counts = A.Unchanged;
    llvm::SmallPtrSet<const llvm::BasicBlock *, 16> Walked;
    llvm::SmallVector<const llvm::BasicBlock *, 16> Pending;
    if (A.CallSiteBlock) { // else the advice was made after the growth limit stopped tracking
      Pending.push_back(A.CallSiteBlock);
      Walked.insert(A.CallSiteBlock);
    }
    size_t BoundaryReached = 0;
    while (!Pending.empty()) {
      const llvm::BasicBlock *BB = Pending.pop_back_val();
      Counts.add(*BB, 1);
      // Past a boundary block lie blocks the inlining left as they were: only the boundary
      // blocks among its successors (an unwind destination's) are followed.
      bool AtBoundary = A.Boundary.contains(BB);
      BoundaryReached += AtBoundary;
      for (const llvm::BasicBlock *Next : llvm::successors(BB))
        if ((!AtBoundary || A.Boundary.contains(Next)) && Walked.insert(Next).second)
          Pending.push_back(Next);
    }
    if (!Walked.contains(&Caller.getEntryBlock()))
      Counts.add(Caller.getEntryBlock(), 1);
    auto Known = Reachable.find(&Caller);
    if (A.CallSiteBlock && BoundaryReached == A.Boundary.size()) {
      Counts.writeTo(Caller, CallerFPI);
      ++this->Work.Recounted;
      if (Known != Reachable.end())
        Known->second.insert(Walked.begin(), Walked.end());
    } else {
      reachableCounts(Caller).writeTo(Caller, CallerFPI);
      ++this->Work.CountedAfresh;
      if (Known != Reachable.end())
        Reachable.erase(Known);
    }
    if (CalleeDeleted)
      Reachable.erase(&Callee);
    if (A.CheckedUpdate) {
      A.CheckedUpdate->finish(FAM);
      Work.CountMismatches += !sameCountedFields(CallerFPI, *A.CheckedCopy);
    }
    int32_t &Current = this->*memberOf(CurrentIRSizeMember{});
    const int32_t Initial = this->*memberOf(InitialIRSizeMember{});
    int64_t CallerAfter = CallerFPI.TotalInstructionCount;
    Current += CallerAfter + (CalleeDeleted ? 0 : A.CalleeIRSize) -
               (A.CallerIRSize + A.CalleeIRSize);
    if (Current > static_cast<float>(GrowthLimit) * Initial)
      this->*memberOf(ForceStopMember{}) = true;
    int64_t NewEdges = CallerFPI.DirectCallsToDefinedFunctions;
    if (CalleeDeleted) {
      --(this->*memberOf(NodeCountMember{}));
      (this->*memberOf(NodesInLastSCCMember{})).erase(CallGraph.lookup(Callee));
      (this->*memberOf(DeadFunctionsMember{})).insert(&Callee);
    } else {
      NewEdges += properties(Callee).DirectCallsToDefinedFunctions;
    }
    this->*memberOf(EdgeCountMember{}) += NewEdges - A.CallerAndCalleeEdges;
    callerChanged(Caller);
  }

  // LLVM's onPassEntry: the module counts brought up to date with what the function passes
  // since the last inliner run did, over the nodes it last saw and their neighbours (in the same
  // order, which decides the call-site height of a node found new), with the local calls read
  // through properties().
  void countedPassEntry(llvm::LazyCallGraph::SCC *SCC) {
    if (!SCC || isForcedToStop())
      return;
    (this->*memberOf(FPICacheMember{})).clear();
    auto &LastSeen = this->*memberOf(NodesInLastSCCMember{});
    auto &Levels = this->*memberOf(FunctionLevelsMember{});
    auto &All = this->*memberOf(AllNodesMember{});
    int64_t &Edges = this->*memberOf(EdgeCountMember{});
    while (!LastSeen.empty()) {
      const llvm::LazyCallGraph::Node *N = *LastSeen.begin();
      LastSeen.erase(N);
      Edges += properties(N->getFunction()).DirectCallsToDefinedFunctions;
      unsigned Level = Levels.at(N);
      for (const llvm::LazyCallGraph::Edge &E : *(*N)) {
        const llvm::LazyCallGraph::Node *Next = &E.getNode();
        if (All.insert(Next).second) {
          ++(this->*memberOf(NodeCountMember{}));
          LastSeen.insert(Next);
          Levels[Next] = Level;
        }
      }
    }
    int64_t &LastEdges = this->*memberOf(EdgesOfLastSeenNodesMember{});
    Edges -= LastEdges;
    LastEdges = 0;
    for (const llvm::LazyCallGraph::Node &N : *SCC)
      LastSeen.insert(&N);
  }

  // LLVM's onPassExit: the local calls of the nodes seen in this run, for the next entry.
  void countedPassExit(llvm::LazyCallGraph::SCC *SCC) {
    (this->*memberOf(FPICacheMember{})).clear();
    if (!SCC || isForcedToStop())
      return;
    auto &LastSeen = this->*memberOf(NodesInLastSCCMember{});
    int64_t &LastEdges = this->*memberOf(EdgesOfLastSeenNodesMember{});
    LastEdges = 0;
    for (const llvm::LazyCallGraph::Node *N : LastSeen)
      LastEdges += properties(N->getFunction()).DirectCallsToDefinedFunctions;
    for (const llvm::LazyCallGraph::Node &N : *SCC)
      if (LastSeen.insert(&N).second)
        LastEdges += properties(N.getFunction()).DirectCallsToDefinedFunctions;
  }

  void leanInlined(llvm::Function &Caller, int64_t CallerBefore, int64_t CalleeBefore,
                   bool CalleeDeleted) {
    // The next call sites' reachability is read from the caller's dominator tree, rebuilt.
    invalidateAfterInlining(Caller);
    int64_t CallerAfter = irSize(Caller);
    Sizes[&Caller] = CallerAfter;
    CurrentIRSize += CallerAfter + (CalleeDeleted ? 0 : CalleeBefore) - (CallerBefore + CalleeBefore);
    if (CurrentIRSize > GrowthLimit * InitialIRSize)
      LeanForceStop = true;
    callerChanged(Caller);
  }

protected:
  // The policy's answer for CB, LLVM's features it binds already written to the runner.
  virtual bool decide(llvm::CallBase &CB) = 0;

  // Whether a decision table will answer CB (decide() gives its answer), LLVM's features but the
  // cost features already written; asks without counting the decision.
  virtual bool tableAnswers(llvm::CallBase &CB) { return false; }

  std::unique_ptr<llvm::InlineAdvice> getAdviceImpl(llvm::CallBase &CB) override;
  std::unique_ptr<llvm::InlineAdvice> getMandatoryAdvice(llvm::CallBase &CB, bool Advice) override;

  WorkCounts Work;

private:
  std::unique_ptr<llvm::InlineAdvice> unreachableAdvice(llvm::CallBase &CB) {
    if (reachable(CB))
      return nullptr;
    return std::make_unique<llvm::InlineAdvice>(this, CB, getCallerORE(CB), false);
  }

  // Whether CB's block is reachable from its function's entry, as LLVM's advisor reads it from
  // the caller's dominator tree. LLVM's flow rebuilds that tree after every inlining it tracks;
  // the counted flow instead keeps the caller's reachable blocks (found by a walk from the entry
  // when first asked, grown by each inlining's walk, dropped when an inlining may have cut
  // blocks off), which give the same answers as a tree built at that moment. Once the growth
  // limit stops tracking, inlinings go untracked and the tree LLVM's flow reads may no longer
  // be current, so from then on the dominator tree is read as LLVM does: every tree the analysis
  // manager holds then was current when the limit was reached, in both flows.
  bool reachable(llvm::CallBase &CB) {
    llvm::Function &Caller = *CB.getCaller();
    if (!Counted || isForcedToStop())
      return FAM.getResult<llvm::DominatorTreeAnalysis>(Caller).isReachableFromEntry(
          CB.getParent());
    auto [It, New] = Reachable.try_emplace(&Caller);
    if (New)
      reachableBlocks(Caller, It->second);
    bool Answer = It->second.contains(CB.getParent());
    if (CheckCounts)
      Work.ReachabilityMismatches +=
          Answer != FAM.getResult<llvm::DominatorTreeAnalysis>(Caller).isReachableFromEntry(
                        CB.getParent());
    return Answer;
  }

  bool forcedToStop() const {
    return Mode == AdvisorMode::Lean ? LeanForceStop : isForcedToStop();
  }

  template <typename T> void setFeature(llvm::FeatureIndex I, T Value) {
    *ModelRunner->getTensor<int64_t>(I) = static_cast<int64_t>(Value);
  }

  std::unique_ptr<llvm::InlineAdvice> trackedAdvice(llvm::CallBase &CB,
                                                    llvm::OptimizationRemarkEmitter &ORE,
                                                    bool Inline) {
    return std::make_unique<CountedAdvice>(this, CB, ORE, Inline);
  }

  const FeatureNeeds Needs;
  const AdvisorMode Mode;
  const bool Counted;     // tracked mode's advice is CountedAdvice
  const bool CheckCounts; // and also runs LLVM's update to compare
  llvm::LazyCallGraph &CallGraph;
  // LLVM's default for -ml-advisor-size-increase-threshold (given, LLVM's flow decides).
  static constexpr int64_t GrowthLimit = 2;
  int64_t InitialIRSize = 0, CurrentIRSize = 0;
  bool LeanForceStop = false;
  llvm::DenseMap<const llvm::Function *, int64_t> Sizes; // lean mode's IR sizes
  llvm::DenseMap<const llvm::Function *, llvm::DenseSet<const llvm::BasicBlock *>> Reachable;
};

inline LazyFeatureAdvisor::~LazyFeatureAdvisor() {
  std::string Line = std::string("feature-work\t") + M.getModuleIdentifier() + "\t" +
                     modeName(Mode) + "\tadvised=" + std::to_string(Work.Advised) +
                     "\testimate=" + std::to_string(Work.Estimates) +
                     "\tcost_features=" + std::to_string(Work.CostFeatureSets) +
                     "\tmandatory_checks=" + std::to_string(Work.MandatoryChecks) +
                     "\tcaller_callee_fpi=" + std::to_string(Work.TrackedAdvice) +
                     "\tfeatures_only_vetoes=" + std::to_string(Work.FeaturesOnlyVetoes) +
                     "\ttable_answered=" + std::to_string(Work.TableAnswered) +
                     "\trecounted=" + std::to_string(Work.Recounted + Work.CountedAfresh) +
                     "\tcounted_afresh=" + std::to_string(Work.CountedAfresh) +
                     "\tcount_mismatches=" + std::to_string(Work.CountMismatches) +
                     "\treachability_mismatches=" + std::to_string(Work.ReachabilityMismatches) +
                     "\n";
  std::string Failed = appendLine("MLGO_PLUGIN_FEATURE_WORK", Line);
  if (!Failed.empty())
    llvm::errs() << "mlgo-inliner: warning: " << Failed << "\n";
}

inline LeanAdvice::LeanAdvice(LazyFeatureAdvisor *Advisor, llvm::CallBase &CB,
                              llvm::OptimizationRemarkEmitter &ORE, bool Inline)
    : llvm::InlineAdvice(Advisor, CB, ORE, Inline), Owner(Advisor),
      CallerSizeBefore(Advisor->cachedIRSize(*Caller)),
      CalleeSizeBefore(Advisor->cachedIRSize(*Callee)) {}

inline void LeanAdvice::recordInliningImpl() {
  Owner->leanInlined(*Caller, CallerSizeBefore, CalleeSizeBefore, false);
}

inline void LeanAdvice::recordInliningWithCalleeDeletedImpl() {
  Owner->leanInlined(*Caller, CallerSizeBefore, CalleeSizeBefore, true);
}

inline CountedAdvice::CountedAdvice(LazyFeatureAdvisor *Advisor, llvm::CallBase &CB,
                                    llvm::OptimizationRemarkEmitter &ORE, bool Inline)
    : llvm::InlineAdvice(Advisor, CB, ORE, Inline), Owner(Advisor),
      CallerIRSize(Advisor->isForcedToStop() ? 0
                                             : Advisor->properties(*Caller).TotalInstructionCount),
      CalleeIRSize(Advisor->isForcedToStop() ? 0
                                             : Advisor->properties(*Callee).TotalInstructionCount),
      CallerAndCalleeEdges(Advisor->isForcedToStop()
                               ? 0
                               : Advisor->properties(*Caller).DirectCallsToDefinedFunctions +
                                     Advisor->properties(*Callee).DirectCallsToDefinedFunctions) {
  if (Inline && !Advisor->isForcedToStop()) {
    CallSiteBlock = CB.getParent();
    Unchanged = PropertyCounts::of(Advisor->properties(*Caller));
    for (const llvm::BasicBlock *Next : llvm::successors(CallSiteBlock))
      Boundary.insert(Next);
    if (const auto *Invoke = llvm::dyn_cast<llvm::InvokeInst>(&CB))
      for (const llvm::BasicBlock *Next : llvm::successors(Invoke->getUnwindDest()))
        Boundary.insert(Next);
    Boundary.erase(CallSiteBlock);
    llvm::SmallPtrSet<const llvm::BasicBlock *, 8> Changing(Boundary.begin(), Boundary.end());
    Changing.insert(CallSiteBlock);
    Changing.insert(&Caller->getEntryBlock());
    for (const llvm::BasicBlock *BB : Changing)
      Unchanged.add(*BB, -1);
  }
  if (Inline && Advisor->checkingCounts()) {
    CheckedCopy = std::make_unique<llvm::FunctionPropertiesInfo>(Advisor->properties(*Caller));
    CheckedUpdate.emplace(*CheckedCopy, CB);
  }
}

inline void CountedAdvice::recordInliningImpl() {
  Owner->countedInlined(*this, *Caller, *Callee, false);
}

inline void CountedAdvice::recordInliningWithCalleeDeletedImpl() {
  Owner->countedInlined(*this, *Caller, *Callee, true);
}

inline std::unique_ptr<llvm::InlineAdvice>
LazyFeatureAdvisor::getMandatoryAdvice(llvm::CallBase &CB, bool Advice) {
  if (Counted) { // LLVM's getMandatoryAdvice, with the counted advice
    if (auto Skip = unreachableAdvice(CB))
      return Skip;
    if (Advice && !isForcedToStop())
      return trackedAdvice(CB, getCallerORE(CB), true);
    return std::make_unique<llvm::InlineAdvice>(this, CB, getCallerORE(CB), Advice);
  }
  if (Mode != AdvisorMode::Lean)
    return llvm::MLInlineAdvisor::getMandatoryAdvice(CB, Advice);
  if (auto Skip = unreachableAdvice(CB))
    return Skip;
  if (Advice && !LeanForceStop)
    return std::make_unique<LeanAdvice>(this, CB, getCallerORE(CB), true);
  return std::make_unique<llvm::InlineAdvice>(this, CB, getCallerORE(CB), Advice);
}

// The decision flow of LLVM's MLInlineAdvisor::getAdviceImpl, step for step, with each group
// of features computed only when the policy binds it.
inline std::unique_ptr<llvm::InlineAdvice> LazyFeatureAdvisor::getAdviceImpl(llvm::CallBase &CB) {
  using namespace llvm;
  if (Mode == AdvisorMode::LLVM) {
    ++Work.Advised; // counted here, whether or not LLVM gives the site to the policy
    return MLInlineAdvisor::getAdviceImpl(CB);
  }
  if (auto Skip = unreachableAdvice(CB))
    return Skip;
  Function &Caller = *CB.getCaller(), &Callee = *CB.getCalledFunction();
  auto GetAssumptionCache = [&](Function &F) -> AssumptionCache & {
    return FAM.getResult<AssumptionAnalysis>(F);
  };
  auto &TIR = FAM.getResult<TargetIRAnalysis>(Callee);
  auto &ORE = FAM.getResult<OptimizationRemarkEmitterAnalysis>(Caller);
  auto MandatoryKind = InlineAdvisor::getMandatoryKind(CB, FAM, ORE);
  if (MandatoryKind == InlineAdvisor::MandatoryInliningKind::Never || &Caller == &Callee)
    return getMandatoryAdvice(CB, false);
  bool Mandatory = MandatoryKind == InlineAdvisor::MandatoryInliningKind::Always;
  if (forcedToStop()) {
    ORE.emit([&] {
      return OptimizationRemarkMissed("inline-ml", "ForceStop", &CB)
             << "Won't attempt inlining because module size grew too much.";
    });
    return std::make_unique<InlineAdvice>(this, CB, ORE, Mandatory);
  }
  int64_t CostEstimate = 0;
  if (!Mandatory) {
    ++Work.Estimates;
    std::optional<int> Estimate = getInliningCostEstimate(CB, TIR, GetAssumptionCache);
    if (!Estimate)
      return std::make_unique<InlineAdvice>(this, CB, ORE, false); // cannot be inlined
    CostEstimate = *Estimate;
  }
  // The cost features into the runner; false when LLVM's analysis fails, a veto in its flow.
  auto WriteCostFeatures = [&]() {
    ++(Mandatory ? Work.MandatoryChecks : Work.CostFeatureSets);
    std::optional<InlineCostFeatures> CostFeatures =
        getInliningCostFeatures(CB, TIR, GetAssumptionCache);
    if (!CostFeatures) {
      Work.FeaturesOnlyVetoes += !Mandatory;
      return false;
    }
    for (size_t I = 0; I < static_cast<size_t>(InlineCostFeatureIndex::NumberOfFeatures); ++I)
      *ModelRunner->getTensor<int64_t>(
          inlineCostFeatureToMlFeature(static_cast<InlineCostFeatureIndex>(I))) =
          CostFeatures->at(I);
    return true;
  };
  // LLVM also vetoes always-inline call sites whose cost features fail: computed for those.
  bool LateCostFeatures = Needs.CostFeaturesAfterTable && !Mandatory;
  if ((Needs.CostFeatures || Mandatory) && !LateCostFeatures && !WriteCostFeatures())
    return std::make_unique<InlineAdvice>(this, CB, ORE, false);
  if (Mandatory)
    return getMandatoryAdvice(CB, true);

  int64_t ConstantArgs = 0;
  for (const Use &Arg : CB.args())
    ConstantArgs += isa<Constant>(Arg);
  setFeature(FeatureIndex::callsite_height, getInitialFunctionLevel(Caller));
  setFeature(FeatureIndex::nr_ctant_params, ConstantArgs);
  setFeature(FeatureIndex::cost_estimate, CostEstimate);
  setFeature(FeatureIndex::is_callee_avail_external, Callee.hasAvailableExternallyLinkage());
  setFeature(FeatureIndex::is_caller_avail_external, Caller.hasAvailableExternallyLinkage());
  ++Work.Advised;
  if (Mode == AdvisorMode::Tracked) {
    ++Work.TrackedAdvice;
    FunctionPropertiesInfo &CallerBefore = Counted ? properties(Caller) : getCachedFPI(Caller);
    FunctionPropertiesInfo &CalleeBefore = Counted ? properties(Callee) : getCachedFPI(Callee);
    setFeature(FeatureIndex::callee_basic_block_count, CalleeBefore.BasicBlockCount);
    setFeature(FeatureIndex::caller_users, CallerBefore.Uses);
    setFeature(FeatureIndex::caller_conditionally_executed_blocks,
               CallerBefore.BlocksReachedFromConditionalInstruction);
    setFeature(FeatureIndex::caller_basic_block_count, CallerBefore.BasicBlockCount);
    setFeature(FeatureIndex::callee_conditionally_executed_blocks,
               CalleeBefore.BlocksReachedFromConditionalInstruction);
    setFeature(FeatureIndex::callee_users, CalleeBefore.Uses);
    if (Needs.ModuleCounts) {
      ModuleCounts Counts = llvmModuleCounts(*this);
      setFeature(FeatureIndex::node_count, Counts.Nodes);
      setFeature(FeatureIndex::edge_count, Counts.Edges);
    }
  }
  // A table's answer needs no cost features (the same veto as LLVM's is assumed as in lean mode:
  // where the estimate succeeds, the cost features do too).
  if (LateCostFeatures) {
    if (tableAnswers(CB))
      ++Work.TableAnswered;
    else if (!WriteCostFeatures())
      return std::make_unique<InlineAdvice>(this, CB, ORE, false);
  }
  if (Mode == AdvisorMode::Tracked)
    return Counted ? trackedAdvice(CB, ORE, decide(CB)) : getAdviceFromModel(CB, ORE);
  return std::make_unique<LeanAdvice>(this, CB, ORE, decide(CB));
}

} // namespace mlgo

#endif // MLGO_PLUGIN_ADVICE_H
