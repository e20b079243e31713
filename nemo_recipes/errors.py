"""The one exception type users see: a single sentence saying what is wrong and where."""


class UserError(Exception):
    """Bad input or configuration. The message is one sentence naming the file, line or key at fault.

    The CLI prints it without a traceback and exits with status 2; stages raise it for anything the user can fix.
    """
