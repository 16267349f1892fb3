"""The one exception type users see as a short message instead of a traceback."""


class CifarlabError(Exception):
    """A mistake in the input (config, data, checkpoint) that the user can fix.

    The entry points print its message as one paragraph and exit non-zero; anything else is a bug
    and keeps its traceback.
    """
