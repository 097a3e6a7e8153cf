"""Store URLs and the passwords in them: the one place that masks, splits and completes them.

A password may hold any character (`/`, a space, `@`, a quote); in a URL given as one value the
password runs from the first `:` after the user to the last `@`. In free text, where a password
with a space cannot be told from the words around it, every password seen in a URL so far is
also masked by value.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Optional
from urllib.parse import quote, unquote

MASK = "***"
# scheme://user:password@host... as one value: the password is greedy up to the last `@`
_VALUE = re.compile(r"^(\s*['\"]?\w[\w+.-]*://[^:/@\s'\"]*:)(.*)@([^@]*)$", re.S)
# the same inside text: one token without spaces, the password up to its last `@`
_IN_TEXT = re.compile(r"(\w[\w+.-]*://[^:/@\s'\"]*:)(\S*)@")
_known: set[str] = set()


def split_password(value: str) -> Optional[tuple[str, str, str]]:
    """(before, password, after) of a URL-valued string with a password, else None."""
    found = _VALUE.match(value)
    if not found or not found.group(2) or "://" in found.group(2):
        return None
    return found.group(1), found.group(2), "@" + found.group(3)


def remember(password: str) -> None:
    """Mask this password wherever it appears from now on (it, and its %-encoded form)."""
    for form in (password, quote(password, safe=""), unquote(password)):
        if len(form) >= 3 and form != MASK:
            _known.add(form)


def mask_password(text: str) -> str:
    """The text with every URL password in it replaced by ***: safe to print, log and store."""
    if not isinstance(text, str):
        return text
    parts = split_password(text)
    if parts is not None and not parts[1].startswith("${"):
        remember(parts[1])
        text = parts[0] + MASK + parts[2]
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _IN_TEXT.sub(lambda m: m.group(0) if m.group(2).startswith(("${", MASK)) else m.group(1) + MASK + "@",
                        text)


def openable(url: str) -> str:
    """The URL as drivers parse it: the characters that would end a password early (`@`, `/`,
    `?`, `#`, a space) %-encoded, and mysql:// with PyMySQL when MySQLdb (SQLAlchemy's default
    driver) is not installed."""
    parts = split_password(url)
    if parts is not None and not parts[1].startswith("${"):
        url = parts[0] + re.sub(r"[@/?# ]", lambda m: quote(m.group(0), safe=""), parts[1]) + parts[2]
    if url.startswith("mysql://") and not importlib.util.find_spec("MySQLdb") and importlib.util.find_spec("pymysql"):
        return "mysql+pymysql://" + url[len("mysql://"):]
    return url


def driver_extra(url: str) -> str:
    """The pip extra that installs the driver a database URL needs."""
    return "mysql" if url.startswith("mysql") else "postgres"

