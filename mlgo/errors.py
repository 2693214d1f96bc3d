"""Exceptions shared across mlgo. Each one names the file or module and the cause."""


class MlgoError(Exception):
    """Base class: an error a user can act on; the CLI prints it without a traceback."""


class ToolchainError(MlgoError):
    """A required LLVM tool is missing or has the wrong version."""


class ProtocolError(MlgoError):
    """The compiler's interactive stream is malformed, truncated or does not match the header."""


class CompileError(MlgoError):
    """The compiler failed, crashed or timed out on a module."""

    def __init__(self, module: str, message: str, stderr: str = "") -> None:
        self.module = module
        self.stderr = stderr
        detail = f"\n{stderr.strip()[-2000:]}" if stderr.strip() else ""
        super().__init__(f"{module}: {message}{detail}")


class CorpusError(MlgoError):
    """A corpus directory or one of its modules is unusable."""
