"""The one exception type users see: a single sentence saying what is wrong and where."""


class UserError(Exception):
    """Bad input or configuration. The message is one sentence naming the file, line or key at fault.

    The CLI prints it without a traceback and exits with status 2; stages raise it for anything the user can fix.
    """

    exit_code = 2


class RequirementsNotMet(UserError):
    """The plan needs what this machine does not have (GPUs, disk, models on local disk); nothing was started."""

    exit_code = 3

    def __init__(self, what: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{what} cannot start on this machine: " + " ".join(problems))


class Interrupted(UserError):
    """A stage stopped before it was done and kept what it did (training saved to stop before a Slurm time limit);
    running it again resumes. Exit status 75 (EX_TEMPFAIL): the next continuation job takes over."""

    exit_code = 75
