"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes: 0 ok, 1 failure, plus a few named domain codes so that scripts can tell "your input
is wrong" from "the job failed". Click's usage errors (unknown option, bad option value, missing
argument) are input errors too and exit 3 (`cli.main.HiclGroup`); 2 is no longer used.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # Click's own code, kept for reference: the CLI maps usage errors to 3
EXIT_INVALID_INPUT = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5


class HiclError(Exception):
    """An error whose message is meant for the user (what, where, how to fix)."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def render(self) -> str:
        text = str(self)
        return f"{text}\nhint: {self.hint}" if self.hint else text


class InvalidInput(HiclError):
    """The user's file or arguments are wrong; nothing was changed."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def render(self) -> str:
        lines = [str(self)] + [f"  - {p}" for p in self.problems]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class NotFound(HiclError):
    exit_code = EXIT_NOT_FOUND


class Conflict(HiclError):
    exit_code = EXIT_CONFLICT
