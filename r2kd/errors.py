"""User-facing errors: anything a user can cause (bad params, missing data, a corrupt checkpoint)
raises a :class:`UserError`; anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """params.yaml is invalid."""


class DataError(UserError):
    """A dataset is missing, corrupt or not in the expected format."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, foreign or of the wrong architecture."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
