"""Every error daskfleet raises on purpose. Only runner.cli turns these into exit codes."""


class DaskfleetError(Exception):
    """Base class: the message is one paragraph a user can act on."""

    exit_code = 1


class ConfigError(DaskfleetError):
    """A cluster or job file is missing, unreadable or invalid (names the file and key)."""

    exit_code = 2


class StateError(DaskfleetError):
    """A cluster's state.json cannot be read; ``path`` is the file."""

    def __init__(self, message: str, *, path):
        super().__init__(message)
        self.path = path


class LabError(DaskfleetError):
    """The local lab could not be created, inspected or removed."""


class ProvisionError(DaskfleetError):
    """Terraform or Ansible failed."""


class HostError(DaskfleetError):
    """One or more hosts failed; `.failures` maps host name -> exception, `.results` the good ones."""

    def __init__(self, message: str, failures: dict | None = None, results: dict | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})
        self.results = dict(results or {})


class ClusterStartError(DaskfleetError):
    """A scheduler or worker did not start or did not become ready."""


class EnvironmentMismatchError(DaskfleetError):
    """Client, scheduler and workers do not run the same Python packages."""


class BatchError(DaskfleetError):
    """A batch job failed (bad data, a failed task, ...)."""


class ModelTooLarge(BatchError):
    """Training would need more memory than a worker has; checked before any training task."""

    def __init__(self, message: str, *, need: str, limit: int, fits: int | None):
        super().__init__(message)
        self.need, self.limit, self.fits = need, limit, fits  # need: what needs how much, in words
