"""The harness's one error type: a fact, a hint, and what to look at."""

from __future__ import annotations


class HarnessError(Exception):
    """A failure the user can act on. `hint` says what to do next."""

    def __init__(self, message: str, hint: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.log_tail = log_tail

    def render(self) -> str:
        text = f"harness: {self}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        if self.log_tail:
            indented = "\n".join("    " + line for line in self.log_tail.splitlines())
            text += f"\n  last lines of its log:\n{indented}"
        return text
