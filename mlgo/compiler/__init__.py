"""Running the real LLVM tools: discovery, interactive compiles, and measuring their output."""
