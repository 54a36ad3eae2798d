"""The README's `full` headline: the undefended `make baseline` baseline and its retrain, llt and
retrain+llt defenses (make baseline's scale: two rounds of two epochs) each evaluated with the `full`
suite, then the recap across the four (the report step), with each suite's time.

    python experiments/evaluate_defenses.py models:/medrobust-small_cnn/1 --max-images 300 > full.md
    python experiments/evaluate_defenses.py models:/medrobust-small_cnn/1 --reuse > full.md   # tabulate again

Data from $MEDROBUST_DATA, tracking to $MLFLOW_TRACKING_URI (default sqlite:///mlflow.db). The
defend, evaluate and report runs land in the experiment `full`; the tables go to standard output.
A suite's time is the sum of the seconds its rows took inside the `full` run (crafting and
predicting; loading, intervals and logging aside), on the retrain+llt model.
"""

import argparse
import contextlib
import math
import sys
import time
from collections import namedtuple

from medrobust import tracking
from medrobust.config import DataConfig, DefendConfig, EvaluateConfig, ReportConfig
from medrobust.evaluation.records import measured_apart, read_records_csv
from medrobust.evaluation.report import condition_label, rows
from medrobust.steps.defend import run_defend
from medrobust.steps.evaluate import MODEL, run_evaluate, suite_conditions
from medrobust.steps.report import recap_order, run_report

EXPERIMENT = "full"
Evaluated = namedtuple("Evaluated", "run_id records")  # an EvaluateResult read back from its run
RETRAIN = dict(rounds=2, epochs_per_round=2)  # make baseline's scale
SUITES = ("thesis", "standard", "adaptive", "health")


def cell(row, metric):
    value = row.get(metric, math.nan)
    if math.isnan(value):
        return "-"
    low, high = row.get(f"{metric}_ci_low", math.nan), row.get(f"{metric}_ci_high", math.nan)
    return f"{value:.3f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")


def worst(table, metric, pick):
    candidates = [r for r in table if not math.isnan(r.get(metric, math.nan))]
    row = pick(candidates, key=lambda r: r[metric])
    return f"{cell(row, metric)} ({condition_label(row['attack'], row['threat'], row['eps'])})"


def suite_seconds(config, table, surrogate):
    """{suite: seconds}: the rows each preset holds, summed from the full run's row times."""
    out = {}
    by_key = {(r["attack"], r["threat"], round(r["eps"], 9)): r for r in table}
    for suite in SUITES:
        conditions, _ = suite_conditions(EvaluateConfig(model_uri=config.model_uri, suites=(suite,)), surrogate)
        keys = [(c.attack, c.threat, round(c.eps, 9)) for c in conditions] + [("none", "clean", 0.0)]
        if suite == "health":
            keys += [k for k in by_key if k[0].startswith("pgd_to_")]
        if suite == "adaptive":
            keys += [k for k in by_key if k[0] == "joint_pgd"]
        out[suite] = sum(by_key[k].get("seconds", 0.0) for k in keys if k in by_key)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="the undefended model URI (make baseline's @baseline version)")
    parser.add_argument("--max-images", type=int, default=400)
    parser.add_argument("--reuse", action="store_true", help="tabulate the latest evaluate runs of the experiment "
                                                               "instead of making them again")
    args = parser.parse_args()
    data = DataConfig()
    results, walls = {}, {}
    if args.reuse:
        for r in tracking.search_runs(EXPERIMENT):
            if r["step"] == "evaluate" and r["status"] == "FINISHED":
                run = tracking.get_run(r["run_id"])
                name = run["tags"].get("medrobust.defense", "none").replace("none", "undefended")
                records = read_records_csv(tracking.load_text_artifact(r["run_id"], "report/records.csv"))
                results[name] = (EvaluateConfig(model_uri=run["tags"]["medrobust.model_uri"]),
                                 Evaluated(r["run_id"], records))
                walls[name] = run["seconds"]
        results = dict(sorted(results.items(), key=lambda item: recap_order(item[0])))
    else:
        models = {"undefended": args.baseline}
        with contextlib.redirect_stdout(sys.stderr):
            for spec in ("retrain", "llt", "retrain+llt"):
                settings = RETRAIN if "retrain" in spec else {}
                models[spec] = run_defend(DefendConfig(model_uri=args.baseline, data=data, defense=spec, alias=None,
                                                       experiment=EXPERIMENT, **settings)).model_uri
        for name, uri in models.items():
            config = EvaluateConfig(model_uri=uri, data=data, suites=("full",), max_images=args.max_images,
                                    experiment=EXPERIMENT)
            start = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                results[name] = (config, run_evaluate(config))
            walls[name] = time.perf_counter() - start
    report = run_report(ReportConfig(experiment=EXPERIMENT))

    print(f"`full` suite on {args.max_images} test images (a class-stratified sample), eps 2/255 unless named; "
          "95 % bootstrap intervals; operating point chosen on the validation split for sensitivity 0.95.\n")
    print("| model | clean accuracy | clean FNR (argmax) | clean FNR (operating point) | worst accuracy | "
          "worst macro recall | worst FNR (argmax) | worst FNR (operating point) | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (config, result) in results.items():
        table = [r for r in rows(result.records, model=MODEL) if not measured_apart(r)]  # attack rows and clean
        clean = next(r for r in table if r["threat"] == "clean")
        attacked = [r for r in table if r["threat"] != "clean" and r["eps"] <= 2 / 255 + 1e-9]
        print(f"| {name} | {cell(clean, 'accuracy')} | {cell(clean, 'fnr')} | {cell(clean, 'op_fnr')} | "
              f"{worst(table, 'accuracy', min)} | {worst(table, 'macro_recall', min)} | {worst(table, 'fnr', max)} | "
              f"{worst(attacked, 'op_fnr', max)} | {walls[name] / 60:.1f} |")
    print("\nWorst cases over every row, security curves (up to 16/255) included; the operating-point column "
          "over the rows at 2/255 or less.\n")
    print("At the thesis' budget, 2/255 (every row at 2/255 or less, the health attack included):\n")
    print("| model | worst accuracy | worst macro recall | worst FNR (argmax) |\n|---|---|---|---|")
    for name, (_, result) in results.items():
        small = [r for r in rows(result.records, model=MODEL) if r["eps"] <= 2 / 255 + 1e-9 and not measured_apart(r)]
        print(f"| {name} | {worst(small, 'accuracy', min)} | {worst(small, 'macro_recall', min)} | "
              f"{worst(small, 'fnr', max)} |")
    print()
    health = {name: next((r for r in rows(result.records, model=MODEL) if r["attack"].startswith("pgd_to_")), None)
              for name, (_, result) in results.items()}
    print("| model | cancers (test sample) | called benign before | after the health attack (argmax) | "
          "below the operating threshold after it |\n|---|---|---|---|---|")
    for name, row in health.items():
        if row:
            print(f"| {name} | {row['cancers']:.0f} | {row['fnr_before']:.3f} | {cell(row, 'fnr')} | "
                  f"{cell(row, 'op_fnr')} |")
    config, result = results["retrain+llt"]
    table = rows(result.records, model=MODEL)
    print(f"\nSeconds per suite (sum of its rows inside the full run, retrain+llt model, {args.max_images} images):\n")
    print("| suite | seconds |\n|---|---|")
    for suite, seconds in suite_seconds(config, table, True).items():
        print(f"| {suite} | {seconds:.0f} |")
    print(f"| full (whole run, wall) | {walls['retrain+llt']:.0f} |")
    print(f"\nrecap: report run {report.run_id}; evaluate runs "
          + ", ".join(f"{n} {r.run_id}" for n, (_, r) in results.items()))


if __name__ == "__main__":
    main()
