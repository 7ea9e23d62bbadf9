"""Typed errors with one-line messages that name the file and the problem."""

from __future__ import annotations

from os import PathLike


class ZeusSegError(Exception):
    """Base class of every error zeusseg raises on purpose."""


class InputError(ZeusSegError, ValueError):
    """A user-supplied file or value is unusable.

    The message is always one line: ``"<path>: <problem>"`` (or just the problem when there is
    no file). The CLI prints it and exits with code 2.
    """

    def __init__(self, path: str | PathLike | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())  # force a single line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class WeightsNotFoundError(ZeusSegError, FileNotFoundError):
    """Model weights are not present locally.

    Args:
        model: the model name that was asked for.
        looked_in: the places that were searched.
        how_to_get: the exact command or URL that provides the weights.
    """

    def __init__(self, model: str, looked_in: list[str] | str, how_to_get: str) -> None:
        if isinstance(looked_in, str):
            looked_in = [looked_in]
        self.model = model
        self.looked_in = list(looked_in)
        self.how_to_get = how_to_get
        where = ", ".join(self.looked_in) if self.looked_in else "nowhere"
        super().__init__(
            f"weights for '{model}' not found (looked in: {where}); to get them: {how_to_get}"
        )
