"""The trainer's one error type: a one-line message for the user and a non-zero exit."""


class TrainerError(Exception):
    """A problem the user can fix (bad folder, unwritable path, ...); no traceback shown."""
