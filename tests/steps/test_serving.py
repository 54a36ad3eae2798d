"""One serving contract for every version: a `path` or an `image` (base64) column in, the same
columns out, whether the version is a trained network or a defended one; bad requests refused
by row; versions logged before the contract; `mlflow.models.evaluate`'s default classifier
evaluator through it. Over real HTTP: tests/system/test_serving_http.py."""

import base64
import io
import random
import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medrobust import tracking
from medrobust.config import DataConfig, PromoteConfig
from medrobust.data.images import decode_image
from medrobust.defenses import DefendedClassifier
from medrobust.errors import ConfigError, DataError, ModelError
from medrobust.models import create_model
from medrobust.predict import MAX_IMAGE_BYTES, RESPONSE_COLUMNS, predict_frame, read_request
from medrobust.steps.promote import run_promote

from stores import shared_network

# trained once per session for every module asking for these settings (stores.network_once)
trained_once, trained = shared_network(epochs=4, per_class_limit=40, fractions=(0.6, 0.2, 0.2))

NAME = "medrobust-small_cnn"
LENIENT = dict(min_robust_macro_recall=0.0, max_attacked_fnr=1.0, max_accuracy_loss=1.0)


def b64(data):
    return base64.b64encode(data).decode()


def encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


# --- the request, on synthetic and real images -------------------------------------------------

def test_an_image_sent_as_base64_reads_as_the_same_file_would(ham_dir, tmp_path):
    classifier = DefendedClassifier(create_model("small_cnn", (32, 32, 3), 7))
    files = sorted((ham_dir / "images").glob("*.jpg"))[:2]
    by_path = read_request(classifier, pd.DataFrame({"path": [str(f) for f in files]}))
    by_bytes = read_request(classifier, pd.DataFrame({"image": [b64(f.read_bytes()) for f in files]}))
    np.testing.assert_array_equal(by_bytes, by_path)  # the JPEG bytes decode and resize as the file does
    # Any size and PNG too, with or without a data: URL prefix; resized inside, as training images were.
    big = np.asarray(Image.open(files[0]).convert("RGB").resize((450, 300)))
    png = encoded(big, "PNG")
    (tmp_path / "big.png").write_bytes(png)
    out = read_request(classifier, pd.DataFrame({"image": [b64(png), "data:image/png;base64," + b64(png)]}))
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(out[0], decode_image(tmp_path / "big.png", 32) / np.float32(255))
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"file": ["a.jpg"]}), "one of the columns 'path' .* or 'image' .* got columns \\['file'\\]"),
    (pd.DataFrame({"path": ["a.jpg"], "image": ["eA=="]}), "one of the columns"),
    (pd.DataFrame({"image": [b64(b"plain text, not a picture")]}), "row 0: cannot decode image"),
    (pd.DataFrame({"image": ["this is not base64!"]}), "row 0: 'image' is not base64 text"),
    (pd.DataFrame({"image": [3.5]}), "row 0: 'image' must be the image file's bytes as base64 text, got float"),
    (pd.DataFrame({"path": [None]}), "row 0: 'path' must be a file path, got NoneType"),
])
def test_a_bad_request_names_what_is_wrong(frame, message):
    classifier = DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7))
    with pytest.raises(DataError, match=message):
        read_request(classifier, frame, image_root=None)


def test_a_truncated_jpeg_or_an_oversized_image_is_refused_by_row(ham_dir):
    classifier = DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7))
    whole = sorted((ham_dir / "images").glob("*.jpg"))[0].read_bytes()
    frame = pd.DataFrame({"image": [b64(whole), b64(whole[: len(whole) // 2])]})
    with pytest.raises(DataError, match="row 1: cannot decode image: corrupt JPEG data"):  # read strictly
        read_request(classifier, frame)
    huge = "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)
    with pytest.raises(DataError, match=f"row 0: 'image' holds .* MiB of base64; an image may be at most "
                                        f"{MAX_IMAGE_BYTES // 2**20} MiB"):
        read_request(classifier, pd.DataFrame({"image": [huge]}))


def test_the_response_has_the_same_columns_with_and_without_a_defense_or_a_detector():
    network = create_model("small_cnn", (16, 16, 3), 7)
    detector = create_model("small_cnn", (16, 16, 3), 2)
    x = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    for classifier in (DefendedClassifier(network), DefendedClassifier(network, (("llt", {"quality": 75}),)),
                       DefendedClassifier(network, detector=detector, threshold=0.0)):
        frame = predict_frame(classifier, x, threshold=0.3)
        assert tuple(frame.columns) == RESPONSE_COLUMNS and len(frame) == 3
        # rejected is the detector's verdict: every image at threshold 0, none without a detector
        assert frame["rejected"].dtype == bool and list(frame["rejected"]) == [classifier.detector is not None] * 3
        assert (frame["malignant_at_threshold"] == (frame["malignancy_score"] >= 0.3)).all()
        # A request's few images skip the compiled forward pass; the network answers the same either way.
        np.testing.assert_allclose(classifier.logits(x, direct=True), classifier.logits(x), rtol=1e-5, atol=1e-6)


def test_a_long_request_is_read_in_chunks_and_a_bad_row_is_named_in_the_whole_request(monkeypatch):
    classifier = DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7))
    rng = np.random.default_rng(0)
    images = [b64(encoded(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "PNG")) for _ in range(300)]
    frame = predict_frame(classifier, pd.DataFrame({"image": images}), threshold=0.5)
    assert len(frame) == 300 and tuple(frame.columns) == RESPONSE_COLUMNS
    single = predict_frame(classifier, pd.DataFrame({"image": images[280:281]}), threshold=0.5)
    np.testing.assert_allclose(frame.iloc[280:281].filter(like="p_").to_numpy(), single.filter(like="p_").to_numpy(),
                               rtol=1e-5, atol=1e-6)
    images[270] = b64(b"GIF89a not what it says")
    with pytest.raises(DataError, match="row 270: cannot decode image"):  # in the second chunk, named in the whole
        predict_frame(classifier, pd.DataFrame({"image": images}))


def test_a_request_reads_no_image_over_the_pixel_budget_nor_other_formats(monkeypatch, tmp_path):
    classifier = DefendedClassifier(create_model("small_cnn", (16, 16, 3), 7))
    image = np.zeros((20, 24, 3), np.uint8)
    monkeypatch.setattr("medrobust.predict.MAX_IMAGE_PIXELS", 400)
    with pytest.raises(DataError, match="row 0: the image is 24 x 20 pixels; at most 400 are read"):
        read_request(classifier, pd.DataFrame({"image": [b64(encoded(image, "PNG"))]}))
    with pytest.raises(DataError, match=r"row 0: cannot decode image \(no image format Pillow reads \(JPEG, PNG only\)\)"):
        read_request(classifier, pd.DataFrame({"image": [b64(encoded(image[:10, :10], "BMP"))]}))
    # A served model: a relative path is relative to its root; a NUL byte is no path at all.
    (tmp_path / "a.png").write_bytes(encoded(image[:10, :10], "PNG"))
    assert read_request(classifier, pd.DataFrame({"path": ["a.png"]}), image_root=str(tmp_path)).shape == (1, 16, 16, 3)
    with pytest.raises(DataError, match="row 1: no readable image at this path"):
        read_request(classifier, pd.DataFrame({"path": ["a.png", "a\x00.png"]}), image_root=str(tmp_path))


def test_versions_logged_before_the_contract_still_load_but_are_not_promoted(ham_dir):
    network = create_model("small_cnn", (16, 16, 3), 7)
    with tracking.run("old"):  # this test's store (MLflow's own calls alone would keep the last one set)
        # what train logged before; its requirements given, or MLflow loads it in a child process to find them
        old = mlflow.keras.log_model(network, name="model", pip_requirements=["tensorflow"])
        new_uri = tracking.log_classifier(DefendedClassifier(network, info={"operating_threshold": 0.5}))[1]
        tracking.register_model(old.model_uri, NAME)
    loaded = tracking.load_classifier(f"models:/{NAME}/1")
    assert loaded.chain == () and [w.shape for w in loaded.network.weights] == [w.shape for w in network.weights]
    assert not tracking.serves_contract(f"models:/{NAME}/1") and tracking.serves_contract(new_uri)
    with pytest.raises(ConfigError, match="version 1\) was logged before every version served one contract"):
        run_promote(PromoteConfig(model_uri=f"models:/{NAME}/1", data=DataConfig(path=str(ham_dir)), experiment="test",
                                  **LENIENT))
    with pytest.raises(ModelError, match="must carry its operating threshold"):
        tracking.log_classifier(DefendedClassifier(network))


def test_loading_a_version_leaves_no_folder_in_the_temporary_folder(tmp_path, monkeypatch):
    network = create_model("small_cnn", (16, 16, 3), 7)
    with tracking.run("load") as run_id:
        runs_uri, model_uri = tracking.log_classifier(DefendedClassifier(network, info={"operating_threshold": 0.5}))
    tracking.register_model(runs_uri, NAME)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where MLflow makes its download folders
    for uri in (runs_uri, model_uri, f"models:/{NAME}/1"):
        assert tracking.load_classifier(uri).n_classes == 7
        assert tracking.serves_contract(uri) and tracking.model_run_id(uri) == run_id
    # MLflow's Model.load downloaded each MLmodel into a folder of its own and left it there
    assert list(temporary.iterdir()) == []


def test_a_version_read_again_is_the_same_network_with_settings_of_its_own():
    # the same Keras network, so the steps compiled for it are reused (models/tracing.py), and
    # what one caller changes in its settings stays its own
    network = create_model("small_cnn", (16, 16, 3), 7)
    with tracking.run("load"):
        runs_uri, model_uri = tracking.log_classifier(
            DefendedClassifier(network, chain=(("llt", {"quality": 50}),), info={"operating_threshold": 0.5}))
        _, other_uri = tracking.log_classifier(DefendedClassifier(network, info={"operating_threshold": 0.5}), "other")
    first = tracking.load_classifier(runs_uri)
    first.info["operating_threshold"] = 0.9
    first.chain[0][1]["quality"] = 10
    again = tracking.load_classifier(model_uri)
    assert again.network is first.network and again.info["operating_threshold"] == 0.5
    assert again.chain == (("llt", {"quality": 50}),)
    random.seed(1)
    read = tracking.load_classifier(other_uri)  # another version: read anew ...
    after_read = random.random()
    random.seed(1)
    found = tracking.load_classifier(other_uri)  # ... then found, Python's random state alike after both
    assert read.network is not first.network and found.network is read.network and random.random() == after_read


def test_mlflow_evaluate_runs_on_a_version_through_the_contract(trained, ham_dir, monkeypatch):
    _, trained = trained
    table = pd.read_csv(ham_dir / "HAM10000_metadata.csv").groupby("dx").head(4)
    frame = pd.DataFrame({"path": [str(ham_dir / "images" / f"{i}.jpg") for i in table.image_id],
                          "label": table.dx.to_list()})
    monkeypatch.setenv("MEDROBUST_IMAGE_ROOT", str(ham_dir))
    with mlflow.start_run(experiment_id=mlflow.set_experiment("evaluate").experiment_id):
        result = mlflow.models.evaluate(f"models:/{NAME}/{trained.version}", frame, targets="label",
                                        model_type="classifier", model_config={"output": "predicted"},
                                        evaluators="default", evaluator_config={"log_model_explainability": False})
    ours = predict_frame(tracking.load_classifier(trained.model_uri), frame[["path"]])
    assert result.metrics["accuracy_score"] == pytest.approx(float(np.mean(ours["predicted"] == frame["label"])))
    assert result.metrics["example_count"] == len(frame)
