"""The portable POSIX user name: the one rule for the names a dryad makes and reports.

A session user's name ends up in `useradd`'s argument list on the board and
in the `ssh USER@HOST` line a client prints for a shell to run, so the dryad
that makes the name and the server that passes it on check it by this one rule.
"""
from __future__ import annotations

import re

__all__ = ["USER_NAME_RULE", "is_user_name"]

# No upper case (some tools fold it), no leading '-' or digit (read as an
# option or a UID), at most 32 characters (utmp's field); `\Z`, not `$`,
# so that a trailing newline is refused too.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
USER_NAME_RULE = ("lower case letters, digits, '_' or '-', starting with a letter or '_', "
                  "at most 32 characters")


def is_user_name(name: object) -> bool:
    """Whether `name` is a portable POSIX user name (see USER_NAME_RULE)."""
    return isinstance(name, str) and _USER_NAME.match(name) is not None
