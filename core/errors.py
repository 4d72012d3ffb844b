"""The project's errors: one root, each kind carrying the exit code the command line returns.

Raised where the cause is known, with a message that names the file, field,
version or request at fault. The command line catches `ProjectError` only;
anything else is a bug and shows its traceback.

Exit codes: 0 success, 1 the pipeline failed, is locked by another run, or a
server could not be reached, 2 bad input, 3 drift found (`fmnist drift`; a
verdict, not an error). `fmnist canary`'s verdicts: 0 promote, 10 hold, 11 roll
back, apart from the error codes so that a script never reads a failure as a
verdict.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DRIFT = 3
EXIT_HOLD = 10
EXIT_ROLL_BACK = 11


class ProjectError(Exception):
    """A failure the user can act on; `exit_code` is what the command line returns."""

    exit_code = EXIT_FAILED


class InputError(ProjectError):
    """Bad input: a missing or malformed file, an invalid flag or config field, an unknown version."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A configuration field (a flag) has a value outside what it accepts."""


class PipelineError(ProjectError):
    """A pipeline run failed, or another run holds the pipeline root."""


class ServingError(ProjectError):
    """A TF Serving endpoint could not be reached or answered with an error."""
