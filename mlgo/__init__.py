"""mlgo: train ML policies for LLVM's inliner and register allocator, and serve them to stock clang-19."""

__version__ = "0.1.0"
