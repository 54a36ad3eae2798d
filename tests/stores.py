"""The tests' tracking stores: each test's own (conftest's isolated_stores), and one made once for
a module's tests to start from."""

import fcntl
import hashlib
import os
import pickle
import sqlite3

import pytest

STORE = "mlflow.db"  # each test's SQLite store, in its tmp_path


def image_cache(tmp_path_factory):
    """One decoded-image cache for the whole session, shared by pytest-xdist's workers (each has
    its own basetemp under the session's; the cache writes by atomic rename, so they can share)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "image-cache"


def empty_store(tmp_path_factory):
    """An SQLite tracking store with MLflow's tables made, once per worker: creating them (the
    schema's migrations) takes MLflow over a second, paid by every test that tracks; copying this
    one (`start_empty`) takes milliseconds."""
    folder = tmp_path_factory.getbasetemp() / "empty-store"
    if not (folder / STORE).exists():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder.mkdir(exist_ok=True)
        partial = folder / f"{STORE}.partial"  # renamed once whole: a failed start leaves no half-made store
        SqlAlchemyStore(f"sqlite:///{partial}", str(folder / "mlruns")).engine.dispose()
        partial.rename(folder / STORE)
    return folder / STORE


def start_empty(store, folder):
    """Make a copy of `empty_store` the store in `folder`, as MLflow would have made it there: its
    Default experiment keeps its artifacts in `folder`/mlruns/0, not in the original's folder."""
    start_from(store, folder)
    with sqlite3.connect(folder / STORE) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   (str(folder / "mlruns" / "0"),))
    db.close()


def made_once(tmp_path_factory, make, *, folder=None):
    """(SQLite file, make(folder)): make run once, in a folder of its own and tracking into a store
    there; for a module-scoped fixture that trains the network its tests share (training it per
    test cost minutes of the suite). A test then starts from a copy of that store (`start_from`),
    so what it adds stays its own."""
    folder = folder or tmp_path_factory.mktemp("made-once")
    folder.mkdir(parents=True, exist_ok=True)
    start_empty(empty_store(tmp_path_factory), folder)
    with pytest.MonkeyPatch.context() as patch:
        # the registry too, set (not left unset): a step exports it, and undoing a set removes it
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.setenv(name, f"sqlite:///{folder / STORE}")
        patch.setenv("MEDROBUST_CACHE", str(image_cache(tmp_path_factory)))
        patch.chdir(folder)
        made = make(folder)
    for leaked in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        os.environ.pop(leaked, None)
    return folder / STORE, made


def start_from(store, folder):
    """Make a copy of `store` the store in `folder` (a test's tmp_path), before the test opens it. Runs, registered versions and aliases come along; artifacts stay in the made-once folder,
    and a test's new runs of an experiment made there write theirs there too, each under its own
    run id: a test must not delete artifacts it did not log."""
    source, copy = sqlite3.connect(store), sqlite3.connect(folder / STORE)
    try:
        source.backup(copy)  # consistent even if SQLite kept part of it in a journal
    finally:
        source.close()
        copy.close()


def shared_network(*, epochs: int, **data):
    """The fixtures `trained_once` (module scope: small_cnn trained on a real HAM10000 subset,
    32 px, `data` as DataConfig settings, in a store of its own; trained once per session for
    every module that asks for the same settings, `network_once`) and `trained` ((DataConfig,
    TrainResult), the test tracking into a copy of that store). A module takes both:
    `trained_once, trained = shared_network(epochs=6, per_class_limit=40)`."""
    @pytest.fixture(scope="module")
    def trained_once(tmp_path_factory, ham_dir):
        return network_once(tmp_path_factory, ham_dir, epochs=epochs, **data)

    @pytest.fixture
    def trained(trained_once, tmp_path):
        store, made = trained_once
        start_from(store, tmp_path)
        return made

    return trained_once, trained


def network_once(tmp_path_factory, ham_dir, *, epochs: int, **data):
    """(SQLite file, (DataConfig, TrainResult)) of small_cnn trained for `epochs` on `data`, made
    once per session, whichever pytest-xdist worker asks first (the others wait on a file lock and
    read what it made): training the same network in several modules cost the inner loop half a
    minute."""
    from medrobust.config import DataConfig, TrainConfig
    from medrobust.steps.train import run_train

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    key = hashlib.sha256(repr((epochs, sorted(data.items()))).encode()).hexdigest()[:16]
    folder = shared / f"network-{key}"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if making fails
        if not (folder / "made.pickle").exists():
            config = DataConfig(path=str(ham_dir), image_size=32, **data)
            _, made = made_once(tmp_path_factory, lambda where: (config, run_train(TrainConfig(
                data=config, epochs=epochs, batch_size=32, class_weight="balanced", experiment="test"))),
                                folder=folder / "made")
            (folder / "made.pickle.partial").write_bytes(pickle.dumps(made))
            (folder / "made.pickle.partial").rename(folder / "made.pickle")
    return folder / "made" / STORE, pickle.loads((folder / "made.pickle").read_bytes())
