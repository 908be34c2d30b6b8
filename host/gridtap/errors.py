"""The one exception type the CLI turns into a clear message instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: bad input, bad config, a missing file.

    The message must name the problem (the key, the line, the file) so that
    `gridtap` can print it as it is and exit with status 2.
    """
