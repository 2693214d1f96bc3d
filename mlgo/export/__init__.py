"""Exporting a trained policy for LLVM: SavedModel, XLA AOT artifacts, and a manifest."""
