"""The error hierarchy of DICOM Lab.

    LabError
    ├── ValidationError          bad input; ``field`` names what was wrong
    │   └── AETitleError         an AE title breaks the PS3.5 rules
    ├── NotFound                 a node, study or job that does not exist
    ├── Conflict                 e.g. an AE title that is already registered
    └── RegistryUnavailable      Redis cannot be reached or answered an error
"""

from __future__ import annotations


class LabError(Exception):
    """Base of every error DICOM Lab raises on purpose."""


class ValidationError(LabError, ValueError):
    """Input that breaks a rule; the message is written for a person."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class AETitleError(ValidationError):
    """An AE title that PS3.5 does not allow."""


class NotFound(LabError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want the sentence
        return str(self.args[0]) if self.args else "not found"


class Conflict(LabError):
    pass


class RegistryUnavailable(LabError):
    """The registry (Redis) could not be reached or answered with an error."""
