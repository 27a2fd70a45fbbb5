"""The one error type that convlab raises for bad input; the CLI turns it into exit code 2."""


class ConvlabError(Exception):
    """A problem the user can fix: the message names the file or option and what to do."""
