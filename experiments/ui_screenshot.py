"""The README's screenshots of the MLflow UI (docs/mlflow-runs.png, docs/mlflow-report.png),
taken by the code tests/system/test_browser.py checks (tests/browser.py, tests/servers.py).

    python experiments/ui_screenshot.py --experiment medrobust --out docs    # after `make run`

Starts `mlflow server` on 127.0.0.1 over the store ($MLFLOW_TRACKING_URI, default
sqlite:///mlflow.db), opens the experiment's runs page with every parent run expanded, and the
HTML report of the latest evaluate step in MLflow's artifact viewer, in Debian's headless Chromium.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import ui_pages  # noqa: E402
from servers import mlflow_server  # noqa: E402

from medrobust import tracking  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="medrobust")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    runs = [r for r in tracking.search_runs(args.experiment) if r["status"] == "FINISHED"]
    by_id = {r["run_id"]: r for r in runs}
    def top_level_step(r):  # not the evaluate a gate nests in itself; a killed parent is not in by_id
        return r["parent"] is None or (r["parent"] in by_id and by_id[r["parent"]]["parent"] is None)

    evaluate = [r for r in runs if r["step"] == "evaluate" and top_level_step(r)][-1]
    parent = by_id[evaluate["parent"]] if evaluate["parent"] else evaluate
    experiment_id = tracking.get_run(evaluate["run_id"])["experiment_id"]
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    with tempfile.TemporaryDirectory() as served, mlflow_server(tracking.tracking_uri(), Path(served) / "a", env) as url:
        runs_text, report_text = ui_pages(url, experiment_id, parent_name=parent["name"],
                                          report_run_id=evaluate["run_id"], shots=args.out)
    print(f"{args.out}/mlflow-runs.png: parent run {parent['name']!r} ({parent['run_id']}), "
          f"{args.out}/mlflow-report.png: evaluate run {evaluate['name']!r} ({evaluate['run_id']})")
    print("\n".join(line for line in report_text.splitlines() if line.startswith("worst")))


if __name__ == "__main__":
    main()
