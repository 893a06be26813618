"""Errors that reach the user: each says where (file, object, field) and what was expected."""
from __future__ import annotations

import textwrap


def fill(text: str, width: int = 80) -> str:
    """A long message in 80 columns, never breaking a path or a name across lines."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def show(value, limit: int = 80) -> str:
    """A value for an error message: repr, cut short (a 10,000-character name is not printed whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class TestbedError(Exception):
    """Base class: a message meant for the user, shown without a traceback by the CLI."""


class TopologyError(TestbedError):
    def __init__(self, file: str | None, obj: str | None, field: str | None, problem: str):
        self.file, self.obj, self.field, self.problem = file, obj, field, problem
        where = ": ".join(p for p in (file, obj, field) if p)
        super().__init__(f"{where}: {problem}" if where else problem)


class PrivilegeError(TestbedError):
    pass


class KernelFeatureError(TestbedError):
    pass


class LabNotFound(TestbedError):
    pass
