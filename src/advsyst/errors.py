"""Exceptions raised by advsyst.  Every message names the offending input."""

from __future__ import annotations

__all__ = [
    "AdvsystError",
    "InputError",
    "ModelOutputError",
    "ConfigError",
    "BudgetViolation",
    "MissingBranchError",
    "UnreadableFileError",
]


class AdvsystError(Exception):
    """Base class of every advsyst error."""


class InputError(AdvsystError, ValueError):
    """Bad input arrays: NaN/inf, wrong shape, mismatched counts, zero variance, too few events."""


class ModelOutputError(AdvsystError, ValueError):
    """A model returned an output of the wrong shape or type."""


class ConfigError(AdvsystError, ValueError):
    """Unknown or invalid configuration keys/values."""


class BudgetViolation(AdvsystError, RuntimeError):
    """An attack result violates its JSD / ΔFN budget (should never happen)."""


class MissingBranchError(AdvsystError, KeyError):
    """A ROOT file lacks a branch the processor needs."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnreadableFileError(AdvsystError, OSError):
    """A file could not be opened or parsed."""
