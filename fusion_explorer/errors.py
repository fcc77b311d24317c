"""Exceptions raised where bad input enters the package.

Every error a user can trigger with a file, an argument or an array is one of these, with a
message that says what was expected and what came. The CLI turns them into one line and exit 2.
"""

from __future__ import annotations


class FusionExplorerError(Exception):
    """Base class of all errors the package raises on purpose."""


class CubeError(FusionExplorerError, ValueError):
    """A cube (array) has the wrong dims, shape, values or coordinates."""


class _FileError(FusionExplorerError, OSError):
    """A file-level failure whose message always names the file: ``"{path}: {reason}"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:  # OSError's __str__ would print the args tuple
        return f"{self.path}: {self.reason}"


class ReadError(_FileError):
    """A file could not be read: missing, corrupt, truncated or not what was expected."""


class SRFError(FusionExplorerError, ValueError):
    """A spectral response does not fit the cube (bands, wavelengths) or cannot be built."""


class ProblemError(FusionExplorerError, ValueError):
    """A fusion problem is inconsistent (sizes, ratio, SRF) or a method was misused."""


class WriteError(_FileError):
    """A file could not be written, or writing it would replace something it must not."""
