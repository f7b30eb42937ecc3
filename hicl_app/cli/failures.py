"""The one line a command prints for a failure of its surroundings rather than of hicl: a file
system that is full, read-only or not ours, and database errors (through the catalog's
`explain_db_error`). Anything not recognised here is a bug, and keeps its traceback."""

from __future__ import annotations

import errno

from ..core.errors import HiclError

_OS_HINTS = {
    errno.ENOSPC: ("no space left on the device", "free some space and run the command again"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space and run the command again"),
    errno.EROFS: ("the file system is read-only", "run it where the workspace can be written"),
    errno.EACCES: ("permission denied", "fix the permissions, or run it as the workspace's owner"),
    errno.EPERM: ("operation not permitted", "fix the permissions, or run it as the workspace's owner"),
}


def explain(exc: BaseException, db_url: str | None) -> HiclError | None:
    """A HiclError for `exc`, or None to let it through."""
    if isinstance(exc, OSError) and exc.errno is not None:
        what, hint = _OS_HINTS.get(exc.errno, (exc.strerror or str(exc), None))
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # every file is written under a temporary name and renamed when whole (core/fsio.py)
            where = f" writing {exc.filename}" if exc.filename else ""
            return HiclError(f"{what}{where}; the command stopped, keeping nothing half-written", hint=hint)
        return HiclError(f"{what}{': ' + str(exc.filename) if exc.filename else ''}", hint=hint)
    if type(exc).__module__.startswith("sqlalchemy") and db_url:
        from ..catalog.db import explain_db_error

        return explain_db_error(exc, db_url)
    return None
