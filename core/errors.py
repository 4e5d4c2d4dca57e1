"""Errors a user can act on. Their message is shown as-is (CLI line, UI notice)."""


class LoupeError(Exception):
    """Base class for failures that should be reported as one clear line, not a traceback."""


class InputRejected(LoupeError):
    """An uploaded file was refused (wrong type, empty, too large, too many pixels)."""


class ModelUnavailable(LoupeError):
    """The configured model could not be loaded (offline, missing, incompatible)."""


class AccessDenied(LoupeError):
    """The user may not see or change this object."""
