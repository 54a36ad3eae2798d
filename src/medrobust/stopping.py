"""SIGTERM (a scheduler, `timeout`, a container stop) as a request to stop.

The handler only sets a flag. The program stops at its next checkpoint, in its own code: between
pipeline steps and tune trials, after each training batch, at each iteration of an attack and
each call an ART attack makes of a network, in each chunk a defense transforms. There it raises
`Terminated`, which unwinds like Ctrl-C: every open run is ended KILLED and nothing half-done is
registered. An exception raised by the handler itself landed wherever the program was, inside
a database call (SQLAlchemy left a half-read cursor) or a finalizer (Python dropped it, and a
pipeline ran on), both seen in CI. The checkpoints are at most a training batch or an attack
iteration apart, well inside a scheduler's grace period (Kubernetes: 30 s). A second SIGTERM
stops at once.

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
