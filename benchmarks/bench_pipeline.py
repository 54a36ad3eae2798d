"""The tracking overhead of a pipeline: wall time with MLflow logging against the same steps
without it, as a ratio, measured in one run.

    .venv/bin/python benchmarks/bench_pipeline.py --data ../shared/data/ham10000

Runs a small pipeline (train, two attacks, an llt defense, an evaluate, the recap) on a fresh
SQLite store in a temporary folder, every public function of medrobust.tracking wrapped in a
timer. "Without logging" is the wall time less the time spent inside those functions: the
steps' own work (decoding aside: the image cache is warmed first). The same pipeline is then
run again, every step reused, which costs tracking only.
"""

import argparse
import functools
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """\
settings:
  data.path: {data}
  data.image_size: 64
  data.per_class_limit: {per_class}
steps:
  train:
    step: train
    with: {{epochs: 3, alias: none}}
  attack:
    step: attack
    with: {{model_uri: "${{train}}"}}
    grid: {{method: [fgsm, pgd]}}
  defend:
    step: defend
    with: {{model_uri: "${{train}}", defense: llt, eval_attacks: [fgsm], alias: none}}
  evaluate:
    step: evaluate
    grid: {{model_uri: ["${{train}}", "${{defend}}"]}}
    with: {{suites: [thesis]}}
  report:
    step: report
    with: {{runs: "${{evaluate}}"}}
"""


def timed_tracking():
    """Wrap every public function of medrobust.tracking (as the steps call it) in a timer;
    returns the dict of seconds spent per function. Nested calls count once (the outermost)."""
    from medrobust import tracking

    spent, depth = {}, [0]
    for name, fn in list(vars(tracking).items()):
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != tracking.__name__:
            continue
        if inspect.isgeneratorfunction(getattr(fn, "__wrapped__", fn)) or name == "run":
            continue  # run() is a context manager around the step: its start and end are timed below

        @functools.wraps(fn)
        def timed(*args, _fn=fn, _name=name, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - start
        setattr(tracking, name, timed)

    original_run = tracking.run

    class TimedRun:  # the run's start and end (MLflow calls), not the step inside it
        def __init__(self, *args, **kwargs):
            self.context = original_run(*args, **kwargs)

        def _timed(self, name, call):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return call()
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        def __enter__(self):
            return self._timed("run (start)", self.context.__enter__)

        def __exit__(self, *exc):
            return self._timed("run (end)", lambda: self.context.__exit__(*exc))

    tracking.run = TimedRun
    return spent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDROBUST_DATA", "../shared/data/ham10000"))
    parser.add_argument("--per-class", type=int, default=60)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="medrobust-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

    import medrobust.steps  # noqa: F401  (the step modules import tracking's functions by module)
    from medrobust.config import DataConfig, PipelineConfig
    from medrobust.console import configure
    from medrobust.data import load_dataset

    configure(False)
    data = str(Path(args.data).absolute())
    load_dataset(DataConfig(path=data, image_size=64, per_class_limit=args.per_class))  # warm the image cache
    spent = timed_tracking()
    from medrobust.steps.pipeline import run_pipeline

    path = folder / "bench.yaml"
    path.write_text(PIPELINE.format(data=data, per_class=args.per_class))
    rows = []
    for label in ("first run (every step runs)", "second run (every step reused)"):
        spent.clear()
        start = time.perf_counter()
        result = run_pipeline(PipelineConfig(file=str(path), experiment="bench"))
        wall = time.perf_counter() - start
        logging = sum(spent.values())
        rows.append((label, len(result.instances), wall, logging, dict(spent)))
    print(f"pipeline: train, 2 attacks, llt, 2 evaluations, report; {args.per_class} images per class at 64 px; "
          f"SQLite store; {os.cpu_count()} cores\n")
    print("| run | steps | wall (s) | in medrobust.tracking (s) | without it (s) | wall / without |")
    print("|---|---|---|---|---|---|")
    for label, steps, wall, logging, _ in rows:
        ratio = f"{wall / (wall - logging):.2f}" if wall - logging > 1 else "- (nothing but lookups)"
        print(f"| {label} | {steps} | {wall:.1f} | {logging:.1f} | {wall - logging:.1f} | {ratio} |")
    print("\nwhere the first run's tracking time goes (s):\n")
    for name, seconds in sorted(rows[0][4].items(), key=lambda kv: -kv[1])[:8]:
        print(f"- {name}: {seconds:.2f}")


if __name__ == "__main__":
    main()
