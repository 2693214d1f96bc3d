"""Serving policies to the stock clang-19: an inliner pass plugin (`-fpass-plugin`) and
mlgo-clang's native program, which serves the register allocator's interactive channel; both
are compiled from a policy's C source (the ABI of mlgo/policies/c_source.py).

Modules here import nothing heavy, because the Python `mlgo-clang` loads them on every compile."""
