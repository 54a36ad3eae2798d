"""SIGTERM (a scheduler, `timeout`, a container stop) as a request to stop.

The handler only sets a flag. The program stops at its next checkpoint, in its own code: before
each training batch, at each iteration of our attacks, at each call an ART attack makes of its
classifier, per vote chunk of randomized smoothing, per image decoded, before a run is
opened or a version registered, between pipeline steps and between tune trials. There it raises
`Terminated`, which unwinds like Ctrl-C: every open run is ended KILLED and nothing half-done is
registered. An exception raised by the handler itself landed wherever the program was, inside
a database call (SQLAlchemy left a half-read cursor) or a finalizer (Python dropped it, and a
pipeline ran on), both seen in CI. A second SIGTERM stops at once. Not yet checked: the
corruption loop of `evaluate --suites corruptions` and ART's certification of a smoothed model
(seconds at `make run`'s sizes, minutes at 224 px), and a validation pass after an epoch; a
SIGTERM that arrives after a step's last checkpoint lets it finish (exit status 0).

The flag is the one piece of state outside the configuration: a signal is the whole process's.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

_requested = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised at a checkpoint, so that context managers close their runs."""


def checkpoint() -> None:
    """Raise Terminated if SIGTERM arrived since `stop_on_sigterm` began; otherwise nothing."""
    if _requested.is_set():
        raise Terminated("SIGTERM")


def _request(signum: int, frame: object) -> None:
    if _requested.is_set():
        raise Terminated("SIGTERM, twice")
    _requested.set()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block, SIGTERM sets the flag `checkpoint` reads (a second one raises at once);
    after it, the previous handler is back and the flag is clear."""
    _requested.clear()
    previous = signal.signal(signal.SIGTERM, _request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested.clear()
