"""What a refused policy file reports: each problem with the file name and the path inside it."""

from __future__ import annotations

from dataclasses import dataclass

MAX_REPORTED = 50


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def render(self, file_name: str) -> str:
        where = f"{file_name}: {self.path}" if self.path else file_name
        return f"{where}: {self.reason}"


class PolicyRefused(Exception):
    """The file is refused whole; nothing it describes was written."""

    def __init__(self, file_name: str, problems: list[Problem], *, sha256: str = ""):
        self.file_name = file_name
        self.sha256 = sha256
        self.problems = problems[:MAX_REPORTED]
        self.more = max(0, len(problems) - MAX_REPORTED)
        super().__init__(self.lines()[0] if problems else file_name)

    def lines(self) -> list[str]:
        lines = [p.render(self.file_name) for p in self.problems]
        if self.more:
            lines.append(f"… and {self.more} more problems")
        return lines


def join(path: str, key: str | int) -> str:
    """A path inside the file: ``agents[1].ceiling[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def show(value, limit: int = 60) -> str:
    """A short, printable echo of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
