"""Kubernetes resource quantities ("500m", "4Gi", "1.5"), checked before they reach the API."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import UsageError

_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>[eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(text: str, what: str) -> Decimal:
    """The value of a quantity, or a UsageError naming the flag and a valid example."""
    match = _QUANTITY.match(text.strip())
    if not match:
        example = "4Gi or 512Mi" if what == "memory" else "2 or 500m"
        raise UsageError(
            f"invalid {what} quantity {text!r}",
            hint=f"use a Kubernetes quantity such as {example}",
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    try:
        return number * (Decimal(10) ** int(suffix[1:]))
    except (InvalidOperation, ValueError) as exc:  # pragma: no cover - the regex admits only ints
        raise UsageError(f"invalid {what} quantity {text!r}") from exc


def check_quantity(text: str | None, what: str) -> str | None:
    """Validate and return `text` unchanged (the API keeps the user's spelling)."""
    if text is None:
        return None
    value = parse_quantity(text, what)
    if value < 0:
        raise UsageError(f"{what} must not be negative: {text!r}", hint="give a positive quantity")
    return text.strip()
