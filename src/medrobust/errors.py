"""The project's error classes.

An expected error is bad input: a setting, a file, a model URI, a request a step cannot
serve. The CLI prints it as one line naming what is wrong and exits 2. Anything else is a bug
and keeps its traceback. Each class is also a ValueError, so callers that catch ValueError
(and argparse-style code) still see it as one.
"""

from collections.abc import Iterable


class MedrobustError(ValueError):
    """An expected error: the message names the file, row, parameter or URI at fault."""


class ConfigError(MedrobustError):
    """A setting out of range, of the wrong type, unknown, or not accepted by what it configures.
    `settings` names the settings at fault (dotted, as a config or a pipeline file spells them),
    so a caller can point at them (a pipeline file's line) without reading the message."""

    def __init__(self, message: str, settings: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.settings = tuple(settings)


class DataError(MedrobustError):
    """Bad input data; the message names the file and row."""


class ModelError(MedrobustError):
    """A model URI that does not resolve, or resolves to something that is not a medrobust classifier."""


class TrainingError(MedrobustError):
    """Training diverged: a non-finite loss, weights or outputs. Nothing is registered."""


class StudyFailed(MedrobustError):
    """A tune study ended with no finished trial: no answer to report. Its run is FAILED and
    keeps every trial's run; exit status 1."""

    exit_status = 1


class GateFailed(MedrobustError):
    """A model version failed the promotion gate: not bad input, a verdict. Exit status 1.
    `result` holds the gate's PromoteResult (its run, criteria and aliases)."""

    exit_status = 1

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class Stopped(Exception):
    """A run stopped on purpose before its end (a pruned tuning trial): its runs end KILLED,
    not FAILED. Not an error: the CLI never sees one."""
