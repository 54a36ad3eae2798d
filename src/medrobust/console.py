"""What the terminal shows: our log lines, progress bars, and third-party start-up noise off.

The library only logs (`logging.getLogger(__name__)`) and draws progress bars; the CLI calls
`configure` once before TensorFlow is imported. Without it (tests, notebooks) nothing here
changes any global setting.
"""

import logging
import os
import sys
import warnings
from collections.abc import Iterable

from tqdm.auto import tqdm


def configure(verbose: bool = False) -> None:
    """Our INFO lines on standard error; with `verbose`, DEBUG and every third-party line too."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow C++ lines (a real error raises in Python)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # MLflow sets its loggers' level on import
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model loaded
        _import_tensorflow_quietly()
        warnings.showwarning = _ours_only(warnings.showwarning)
        for name in ("mlflow", "alembic", "absl", "tensorflow", "art"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import optuna  # its import sets its own logger to INFO: a line per trial; tune logs its own

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    ours = logging.getLogger("medrobust")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    ours.propagate = False
    if verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)


def _ours_only(show):
    """warnings.showwarning that drops warnings raised in installed packages (ART's optional
    PyTorch parts, MLflow's type-hint advice, Keras' deprecations). Filters cannot do it:
    MLflow resets them around its own warnings."""
    def show_ours(message, category, filename, lineno, file=None, line=None):
        if "site-packages" not in filename and "dist-packages" not in filename:
            show(message, category, filename, lineno, file, line)
    return show_ours


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 closed: its C++ start-up lines (absl's
    "before InitializeLog", oneDNN's notice) ignore TF_CPP_MIN_LOG_LEVEL since TF 2.20."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True) -> tqdm:
    """A progress bar on standard error, drawn only on a terminal (logs and CI stay clean)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True,
                leave=False)
