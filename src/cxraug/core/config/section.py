"""The base of every params.yaml section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_error(error: dict) -> str:
    """One pydantic error as `key.path: message (got value)`."""
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if not error["loc"] and error["msg"].startswith("Value error, "):  # a cross-section rule names its keys
        return error["msg"].removeprefix("Value error, ")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against the documented params)"
    elif "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})" if "(got" not in message else ""
    return f"{key}: {message}"
