"""The serving contract over real HTTP: `mlflow models serve` of @robust on 127.0.0.1 answers a
`path` and an `image` request alike, refuses bad requests with a 400 naming the row and keeps
serving; after a promotion moves @robust from a defended version to a trained one and the
server restarts, the same request gets the same columns and the new version's numbers. MLflow's
`mlflow models predict` answers as the server does."""

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, PromoteConfig, TrainConfig
from medrobust.predict import RESPONSE_COLUMNS, predict_frame
from medrobust.steps.defend import run_defend
from medrobust.steps.promote import run_promote
from medrobust.steps.train import run_train
from servers import model_server

NAME = "medrobust-small_cnn"
LENIENT = dict(min_robust_macro_recall=0.0, max_attacked_fnr=1.0, max_accuracy_loss=1.0)


def b64(data):
    return base64.b64encode(data).decode()


def invoke(url, frame=None, body=None):
    """(HTTP status, parsed JSON body) of one POST to /invocations."""
    if body is None:
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})
    request = urllib.request.Request(f"{url}/invocations", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def answered(payload):
    return pd.DataFrame(payload["predictions"])


def test_served_robust_version_keeps_its_contract_across_a_promotion(ham_dir, tmp_path, child_env):
    data = DataConfig(path=str(ham_dir), image_size=32, per_class_limit=30)
    trained = run_train(TrainConfig(data=data, epochs=2, batch_size=32, experiment="test"))
    defended = run_defend(DefendConfig(model_uri=trained.model_uri, data=data, defense="llt", eval_attacks=("fgsm",),
                                       max_images=8, experiment="test"))
    gate = dict(data=data, suites=("adaptive",), max_images=16, apgd_steps=5, experiment="test", **LENIENT)
    run_promote(PromoteConfig(**gate))
    assert tracking.model_aliases(NAME)["robust"] == defended.version == 2

    # Every version carries the same signature, trained or defended.
    for version in (1, 2):
        signature = mlflow.models.get_model_info(f"models:/{NAME}/{version}").signature
        assert [(c.name, c.type.name, c.required) for c in signature.inputs.inputs] == [("path", "string", False),
                                                                                         ("image", "string", False)]
        assert tuple(c.name for c in signature.outputs.inputs) == RESPONSE_COLUMNS
        assert signature.to_dict() == tracking.serving_signature().to_dict()

    files = sorted((ham_dir / "images").glob("*.jpg"))[:3]
    by_path = pd.DataFrame({"path": [str(f) for f in files]})
    by_bytes = pd.DataFrame({"image": [b64(f.read_bytes()) for f in files]})
    env = child_env() | {"MEDROBUST_IMAGE_ROOT": str(ham_dir)}

    def expected(version):
        classifier = tracking.load_classifier(f"models:/{NAME}/{version}")
        return predict_frame(classifier, by_path, threshold=classifier.info["operating_threshold"])

    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(files[0].read_bytes())
    whole = files[0].read_bytes()
    bad = {
        "not an image": pd.DataFrame({"image": [b64(whole), b64(b"%PDF-1.4 not a picture")]}),
        "a truncated JPEG": pd.DataFrame({"image": [b64(whole), b64(whole), b64(whole[:2000])]}),
        "a path outside the root": pd.DataFrame({"path": [str(files[0]), str(outside)]}),
        "a 20 MB string": pd.DataFrame({"image": ["Q" * 20_000_000]}),
        "a wrong column": pd.DataFrame({"file": [str(files[0])]}),
    }
    rows = {"not an image": "row 1", "a truncated JPEG": "row 2", "a path outside the root": "row 1",
            "a 20 MB string": "row 0", "a wrong column": "'path' (image files) or 'image'"}

    with model_server(f"models:/{NAME}@robust", env, tmp_path / "serve-1.log") as url:
        status, first = invoke(url, by_path)
        assert status == 200, first
        first = answered(first)
        assert tuple(first.columns) == RESPONSE_COLUMNS and len(first) == 3
        np.testing.assert_allclose(first.filter(like="p_").to_numpy(), expected(2).filter(like="p_").to_numpy(),
                                   rtol=1e-5, atol=1e-6)
        status, same = invoke(url, by_bytes)  # the bytes themselves: the same answer
        assert status == 200
        pd.testing.assert_frame_equal(answered(same), first)
        for what, frame in bad.items():
            status, error = invoke(url, frame)
            assert status == 400 and error.get("error_code") == "INVALID_PARAMETER_VALUE", (what, status, error)
            assert rows[what] in error.get("message", ""), (what, error)
        assert invoke(url, body="{not json")[0] // 100 == 4
        status, again = invoke(url, by_path)  # it kept serving
        assert status == 200
        pd.testing.assert_frame_equal(answered(again), first)
    # MLflow's own CLI answers as the server does
    (tmp_path / "input.csv").write_text("path\n" + "\n".join(map(str, files)) + "\n")
    done = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{NAME}@robust",
                           "-i", str(tmp_path / "input.csv"), "-t", "csv", "--env-manager", "local",
                           "-o", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"]), first)

    # The trained version (no defense) becomes @robust; the service restarts and is asked the same.
    run_promote(PromoteConfig(model_uri=f"models:/{NAME}/1", **gate))
    assert tracking.model_aliases(NAME)["robust"] == 1
    with model_server(f"models:/{NAME}@robust", env, tmp_path / "serve-2.log") as url:
        status, second = invoke(url, by_path)
    assert status == 200, second
    second = answered(second)
    assert tuple(second.columns) == tuple(first.columns)
    np.testing.assert_allclose(second.filter(like="p_").to_numpy(), expected(1).filter(like="p_").to_numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(second.filter(like="p_").to_numpy(), first.filter(like="p_").to_numpy())
    assert list(second["malignant_at_threshold"]) == list(expected(1)["malignant_at_threshold"])
