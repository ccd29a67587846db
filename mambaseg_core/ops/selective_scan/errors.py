"""The error every backend raises when it cannot run here."""


class BackendUnavailableError(RuntimeError):
    """A requested selective-scan backend cannot run here; the message says why and how to fix it."""
