"""Errors meant for the person running the command, not for a debugger."""


class UserError(Exception):
    """Bad input or a failed precondition: the CLI prints the message alone and exits 2.

    The message says what was wrong, where (file, column, row, value) and what to do.
    """


class TrainingFailed(Exception):
    """Training could not finish (diverged past the NaN guard, storage gone): exit 1."""
