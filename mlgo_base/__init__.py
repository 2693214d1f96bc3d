"""The bottom layer of mlgo: what every other layer may use and which imports none of them.

errors (the exceptions a user can act on), files (atomic writes, file hashes) and toolchain
(finding the chosen LLVM's tools, 19 or 22). `corpus_tools` is built on this package only, and
`mlgo` on both; tests/test_layers.py keeps it that way."""
