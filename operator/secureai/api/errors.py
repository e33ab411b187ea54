"""Validation errors as the one-line reasons users see."""

from __future__ import annotations

from pydantic import ValidationError


def one_line(exc: ValidationError) -> str:
    """A pydantic error as `field.path[0].name: reason; ...`."""
    parts = []
    for err in exc.errors():
        path = ""
        for loc in err["loc"]:
            if loc == "[key]":
                path += " (key)"
            else:
                path += f"[{loc}]" if isinstance(loc, int) else (f".{loc}" if path else str(loc))
        msg = err["msg"].replace("\n", " ")
        parts.append(f"{path or '(document)'}: {msg}")
    return "; ".join(parts)
