"""Exceptions whose message is meant for the user as it is (the CLI prints it without a traceback)."""


class UserFacingError(ValueError):
    """An error caused by the user's input (data, arguments); its message says what and where."""
