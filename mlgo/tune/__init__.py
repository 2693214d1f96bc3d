"""`mlgo tune`: make one project's own build smaller, in one command (docs/tune.md).

The steps, each resumable (its output written atomically, a finished step skipped on a re-run):
  plain     configure and build the project at clang-19 -Oz (a CMake source directory), or
            recompile a compile_commands.json's compiles at -Oz (any build system)
  corpus    the chosen compiles' -Oz IR (corpus_tools/extract.py)
  baseline  each module compiled once as LLVM decides: sizes, compile times, COMDAT weights
  search    per module, decisions that beat LLVM's (mlgo/search.py), within the time the run
            has left after reserving the estimated cost of the later steps
  train     imitation of the search's best decisions (residual policy, own_project.gin)
  eval      the policy on the corpus against -Oz
  export    the policy's SavedModel, its clang plugin, a CMake initial-cache file and a plain
            flags file for other build systems
  rebuild   the same build with the plugin; the project's tests on it
  report    report.md, report.json and a PNG: .text of each linked binary of the two builds,
            per module, time per step

Modules: progress.py (time budget, ETA lines, step records), project.py (builds, compile
databases, measurements of the two builds), deadline_pool.py (the greedy search's workers,
stopped at a deadline), learn.py (corpus, search, training, evaluation, incremental reuse),
report.py, flow.py (the order of the steps)."""
