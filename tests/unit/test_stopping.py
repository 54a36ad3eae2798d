"""SIGTERM sets a flag; the program stops at its next checkpoint (stopping.py). The whole path, a
`medrobust` process stopped by SIGTERM with its run KILLED, is tests/system/test_faults.py's."""

import os
import signal

import numpy as np
import pytest
import sqlalchemy

from medrobust import stopping, tracking
from medrobust.attacks import gradient
from medrobust.attacks.art_reference import square_art
from medrobust.attacks.art_wrapper import CompiledForward, as_art_classifier
from medrobust.data.images import decode_files
from medrobust.config import DataConfig, TrainConfig
from medrobust.models import create_model
from medrobust.models.training import fit


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_inside_a_database_call_or_a_finalizer_interrupts_neither(tmp_path):
    """Raised by the handler inside SQLAlchemy's fetch, SIGTERM left a half-read cursor; inside
    a finalizer, Python dropped it (both seen in CI). Now each call finishes, and the next
    checkpoint stops the program."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *a: _sigterm())

    class Finalized:
        def __del__(self):
            _sigterm()

    with stopping.stop_on_sigterm():
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select 1")).fetchall() == [(1,)]
        with pytest.raises(stopping.Terminated, match="SIGTERM"):
            stopping.checkpoint()
    with stopping.stop_on_sigterm():
        Finalized()  # collected at once: its __del__ runs here
        with pytest.raises(stopping.Terminated, match="SIGTERM"):
            stopping.checkpoint()


def test_a_second_sigterm_stops_at_once_and_the_block_leaves_nothing_behind():
    previous = signal.getsignal(signal.SIGTERM)
    with stopping.stop_on_sigterm():
        stopping.checkpoint()  # nothing asked yet
        _sigterm()
        with pytest.raises(stopping.Terminated, match="twice"):
            _sigterm()
    assert signal.getsignal(signal.SIGTERM) is previous
    stopping.checkpoint()  # the flag went with the block


def test_training_stops_at_the_batch_after_sigterm_not_after_its_epochs():
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 16, 16, 3), dtype=np.float32), np.arange(64) % 7
    model = create_model("small_cnn", (16, 16, 3), 7)
    config = TrainConfig(data=DataConfig(image_size=16), epochs=50, batch_size=16, patience=0)
    epochs = []

    def on_epoch(epoch, logs):
        epochs.append(epoch)
        _sigterm()

    with stopping.stop_on_sigterm(), pytest.raises(stopping.Terminated):
        fit(model, x, y, x[:14], y[:14], config, on_epoch=on_epoch)
    assert epochs == [0]


def test_attacks_stop_at_their_next_iteration_and_arts_at_their_next_call_of_the_classifier():
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 16, 16, 3), dtype=np.float32), np.arange(8) % 7
    model = create_model("small_cnn", (16, 16, 3), 7)
    classifier = as_art_classifier(CompiledForward(model))
    with stopping.stop_on_sigterm():
        assert classifier.predict(x).shape == (8, 7)  # traced here: later calls run ART's graph, not our code
        _sigterm()
        for attack in (gradient.fgsm, gradient.pgd, gradient.apgd, gradient.cw_pgd, gradient.square, square_art):
            with pytest.raises(stopping.Terminated):
                attack(model, x, y=y, eps=2 / 255)
        for call in (classifier.predict, lambda z: classifier.loss_gradient(z, np.eye(7)[y]),
                     lambda z: classifier.class_gradient(z, label=0)):
            with pytest.raises(stopping.Terminated):
                call(x)


def test_no_run_is_opened_and_nothing_registered_after_sigterm():
    with stopping.stop_on_sigterm():
        _sigterm()
        with pytest.raises(stopping.Terminated), tracking.run("stopped"):
            pass
        with pytest.raises(stopping.Terminated):
            tracking.register_model("runs:/0123/model", "never")
    assert tracking.search_runs("stopped") == [] and tracking.model_versions("never") == []


def test_decoding_stops_at_the_next_image(ham_metadata, ham_dir):
    files = [ham_dir / "images" / f"{i}.jpg" for i in ham_metadata.image_id[:400]]
    with stopping.stop_on_sigterm():
        _sigterm()
        with pytest.raises(stopping.Terminated):
            decode_files(files, 32, progress=False)
