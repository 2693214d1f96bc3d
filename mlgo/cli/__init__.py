"""The `mlgo` command line."""
