"""mlgo: train ML policies for LLVM's inliner and register allocator, and serve them to stock clang-19 or clang-22."""

__version__ = "0.1.0"
