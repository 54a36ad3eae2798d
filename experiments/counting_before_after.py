"""The README's before/after of the robust-accuracy counting (issue 18) on one model.

    MEDROBUST_DATA=../shared/data/ham10000 .venv/bin/python experiments/counting_before_after.py

In a fresh store (./counting/mlflow.db): trains the issue's small_cnn (--per-class-limit 200
--image-size 64 --epochs 8) and its llt defense, then measures each at 2/255 and 8/255 on the
same 100 test images three ways: `evaluate --suites standard,adaptive,health` as c0fa852 counted
(attacks on the model's own predictions, the headline the lowest row; run from a git worktree
of that commit), the same command today (true labels, per-image worst case, ensemble row), and
ART's AutoAttack ensemble on the true labels (`attack --method autoattack_art`: APGD-CE,
APGD-DLR, DeepFool, Square; through llt by BPDA). Prints a markdown table: worst accuracy and
worst op_fnr (cancers under the operating threshold) of each.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "c0fa852"
STORE = Path("counting").absolute()
COMMON = ["--max-images", "100", "--per-class-limit", "200", "--experiment", "counting"]


def medrobust(*args, src=None):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{STORE / 'mlflow.db'}")
    if src:
        env["PYTHONPATH"] = str(src)  # the old code, imported before the installed (editable) package
    done = subprocess.run([sys.executable, "-m", "medrobust", *args], env=env, capture_output=True, text=True,
                          cwd=STORE)
    if done.returncode:
        raise SystemExit(f"medrobust {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stderr + done.stdout


def run_id(output):
    """The id in the step's closing line ('... run <32 hex> ...')."""
    found = re.findall(r"\brun ([0-9a-f]{32})\b", output)
    if not found:
        raise SystemExit(f"no run id in:\n{output[-2000:]}")
    return found[-1]


def metrics(run):
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{STORE / 'mlflow.db'}"
    from medrobust import tracking
    return tracking.get_run(run)["metrics"]


def main():
    STORE.mkdir(exist_ok=True)
    old = STORE / "before"
    if not old.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), BEFORE], check=True)
    plain = run_id(medrobust("train", "--image-size", "64", "--epochs", "8", "--per-class-limit", "200",
                             "--experiment", "counting", "--alias", "none"))
    plain_uri = f"runs:/{plain}/model"
    llt = run_id(medrobust("defend", "--model-uri", plain_uri, "--defense", "llt", "--eval-attacks", "fgsm",
                           "--per-class-limit", "200", "--max-images", "20", "--register", "false",
                           "--experiment", "counting"))
    models = {"undefended": plain_uri, "llt": f"runs:/{llt}/model"}
    print("| model | eps | c0fa852 `evaluate` worst accuracy | today `evaluate` (ensemble) | ART AutoAttack (true labels) "
          "| c0fa852 worst op_fnr | today worst op_fnr |")
    print("|---|---|---|---|---|---|---|")
    for name, uri in models.items():
        for eps in ("2/255", "8/255"):
            suites = ["--suites", "standard,adaptive,health", "--eps", eps, "--model-uri", uri]
            before = metrics(run_id(medrobust("evaluate", *suites, *COMMON, src=old / "src")))
            after = metrics(run_id(medrobust("evaluate", *suites, *COMMON)))
            art = metrics(run_id(medrobust("attack", "--method", "autoattack_art", "--eps", eps, "--model-uri", uri,
                                           *COMMON)))
            print(f"| {name} | {eps} | {before['worst_accuracy']:.2f} | {after['worst_accuracy']:.2f} | "
                  f"{art['adv_accuracy']:.2f} | {before.get('worst_op_fnr', float('nan')):.2f} | "
                  f"{after.get('worst_op_fnr', float('nan')):.2f} |", flush=True)


if __name__ == "__main__":
    main()
