"""Serving policies to the stock clang-19: an inliner pass plugin (`-fpass-plugin`) and a native
host for the register allocator's interactive channel, both compiled from a policy's C source.

The seam between a policy and these binaries is a small C ABI (see `codegen.py`); modules here
import nothing heavy, because the compiler wrapper loads them on every compile."""
