"""The README's tables of `make run` (the quick pipeline), read back from its store.

    .venv/bin/python experiments/quick_summary.py     # after `make run`, in the same folder

Takes the latest finished `pipeline` run of the experiment (default medrobust), whose
pipeline/steps.json names the run of every step, and prints markdown: per model the clean
figures, the ensemble row at 2/255 (per image the worst over every attack of the suites, BPDA
through a transformation), accuracy and the false-negative rate each with its 95 % interval,
the share of cancers under the operating threshold, the health attack's, and a defended
model's paired differences to its parent (from the recap each report step logged), one table
per network; the attacks white-box against transferred between the two networks; the
poisoning sweep; the gate's verdict. Nothing is computed here that a step did not log.
"""

import argparse
import csv
import io

from medrobust import tracking
from medrobust.evaluation.records import read_records_csv
from medrobust.evaluation.shift import worst_corruption

CLEAN = "no attack (clean)"
ENSEMBLE = "ensemble 2/255 (per-image worst over the suite)"
HEALTH = "health 2/255 (white-box)"


def latest_pipeline(experiment):
    runs = [r for r in tracking.search_runs(experiment) if r["step"] == "pipeline" and r["status"] == "FINISHED"]
    if not runs:
        raise SystemExit(f"no finished pipeline run in experiment {experiment!r}: run `make run` first")
    return runs[-1]  # oldest first


def cell(row, metric):
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    value = float(row[metric])
    return f"{value:.3f} [{float(low):.3f}, {float(high):.3f}]" if low not in (None, "", "nan") else f"{value:.3f}"


def defined(row, metric):
    return row.get(metric) not in (None, "", "nan")


def recap_table(steps):
    """One table per network, as the thesis' tables: per model clean, under the suite's ensemble
    at 2/255 (per image the worst over every attack, white-box and transferred), the health
    attack at the operating threshold, and a defense's paired difference to its parent."""
    header = ["model", "clean accuracy", "clean FNR", "robust accuracy", "FNR under attack", "op_fnr under attack",
              "health attack op_fnr", "clean FNR vs parent (paired)", "robust accuracy vs parent (paired)",
              "FNR under attack vs parent (paired)"]
    tables = []
    for step in (s for s in steps if s["step"] == "report"):
        recap = list(csv.DictReader(io.StringIO(tracking.load_text_artifact(step["run_id"], "report/recap.csv"))))
        runs = tracking.load_json_artifact(step["run_id"], "report/runs.json")
        undefended = tracking.get_run(next(iter(runs.values())))["tags"]["medrobust.model_uri"]
        network = undefended.split("/")[1].removeprefix("medrobust-").split("@")[0]  # models:/medrobust-<arch>/<v>
        lines = [f"**{network}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model in dict.fromkeys(r["model"] for r in recap):
            rows = {r["condition"]: r for r in recap if r["model"] == model}
            clean, ensemble, health = rows[CLEAN], rows[ENSEMBLE], rows.get(HEALTH, {})
            out = [model, cell(clean, "accuracy"), cell(clean, "fnr"), cell(ensemble, "accuracy"),
                   cell(ensemble, "fnr"), cell(ensemble, "op_fnr") if defined(ensemble, "op_fnr") else "-",
                   cell(health, "op_fnr") if defined(health, "op_fnr") else "-"]
            out.append(cell(clean, "delta_fnr") if defined(clean, "delta_fnr") else "-")
            out += [cell(ensemble, m) if defined(ensemble, m) else "-" for m in ("delta_accuracy", "delta_fnr")]
            lines.append("| " + " | ".join(out) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def per_attack_table(steps):
    """One table per network: per model, accuracy / FNR clean and under each attack of the
    suites at 2/255, white-box and transferred from the parent (per image the worse of clean and
    attacked, as every row is counted)."""
    tables = []
    for step in (s for s in steps if s["step"] == "report"):
        recap = list(csv.DictReader(io.StringIO(tracking.load_text_artifact(step["run_id"], "report/recap.csv"))))
        conditions = [c for c in dict.fromkeys(r["condition"] for r in recap)
                      if c != ENSEMBLE and not c.endswith("(corruption)")]
        lines = ["| model | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
        for model in dict.fromkeys(r["model"] for r in recap):
            rows = {r["condition"]: r for r in recap if r["model"] == model}
            out = [f"{float(rows[c]['accuracy']):.3f} / {float(rows[c]['fnr']):.3f}" if c in rows else "-"
                   for c in conditions]
            lines.append(f"| {model} | " + " | ".join(out) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def corruption_table(steps, severity=3):
    """One table per network: per model under the natural corruptions at `severity`, the mean
    accuracy over them with its paired change from clean, and the worst op_fnr and where, from
    each evaluate run's records (report/records.csv)."""
    header = ["model", f"mean accuracy, severity {severity}", "change from clean (paired)",
              f"mean op_fnr, severity {severity}", f"worst op_fnr, severity {severity}"]
    tables = []
    for step in (s for s in steps if s["step"] == "report"):
        runs = tracking.load_json_artifact(step["run_id"], "report/runs.json")
        undefended = tracking.get_run(next(iter(runs.values())))["tags"]["medrobust.model_uri"]
        network = undefended.split("/")[1].removeprefix("medrobust-").split("@")[0]
        lines = [f"**{network}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model, run_id in runs.items():
            records = read_records_csv(tracking.load_text_artifact(run_id, "report/records.csv"))
            mean = {r["metric"]: r["value"] for r in records if r["model"] == "target" and r["threat"] == "corruption"
                    and r["attack"] == "mean" and r["eps"] == severity}
            if not mean:
                continue
            worst = worst_corruption(records, model="target", metric="op_fnr", severity=severity)
            tail = "- | -" if worst is None else (f"{cell(mean, 'op_fnr')} | {worst['value']:.3f} "
                                                 f"[{worst['ci_low']:.3f}, {worst['ci_high']:.3f}] ({worst['corruption']})")
            lines.append(f"| {model} | {cell(mean, 'accuracy')} | {cell(mean, 'change_accuracy')} | {tail} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def step_times(steps):
    """Minutes per kind of step, from each step run's own start and end (steps.json names them)."""
    minutes = {}
    for step in steps:
        seconds = tracking.get_run(step["run_id"])["seconds"] or 0
        minutes[step["step"]] = minutes.get(step["step"], 0) + seconds / 60
    return ", ".join(f"{kind} {m:.1f} min" for kind, m in minutes.items())


def network_table(steps):
    """The trained networks on the whole test split (1,252 images): issue 19's targets."""
    lines = ["| network | test accuracy | test macro recall | test FNR | epochs |", "|---|---|---|---|---|"]
    for step in (s for s in steps if s["step"] == "train"):
        run = tracking.get_run(step["run_id"])
        m, p = run["metrics"], run["params"]
        lines.append(f"| {p['arch']} | {m['clean_accuracy']:.3f} | {m['clean_macro_recall']:.3f} | "
                     f"{m['clean_fnr']:.3f} | {p['epochs']} |")
    return "\n".join(lines)


def attack_table(steps):
    lines = ["| attack | accuracy clean -> attacked | FNR clean -> attacked | fooling rate |", "|---|---|---|---|"]
    for step in (s for s in steps if s["step"] == "attack"):
        m = tracking.get_run(step["run_id"])["metrics"]
        lines.append(f"| {step['label']} | {m['clean_accuracy']:.3f} -> {m['adv_accuracy']:.3f} | "
                     f"{m['clean_fnr']:.3f} -> {m['adv_fnr']:.3f} | {m['fooling_rate']:.3f} |")
    return "\n".join(lines)


def poison_table(steps, experiment):
    lines = ["| nv relabelled bkl | labels flipped | accuracy | macro recall | FNR |", "|---|---|---|---|---|"]
    for step in (s for s in steps if s["step"] == "poison"):
        children = [tracking.get_run(r["run_id"]) for r in tracking.search_runs(experiment)
                    if r["parent"] == step["run_id"]]
        for run in sorted(children, key=lambda run: float(run["params"]["poison.fraction"])):
            p, m = run["params"], run["metrics"]
            lines.append(f"| {float(p['poison.fraction']):.0%} | {p['poison.n_flipped']} | {m['clean_accuracy']:.3f} | "
                         f"{m['clean_macro_recall']:.3f} | {m['clean_fnr']:.3f} |")
    return "\n".join(lines)


def gate_lines(steps):
    out = []
    for step in (s for s in steps if s["step"] == "promote"):
        gate = tracking.load_json_artifact(step["run_id"], "gate.json")
        checks = "; ".join(f"{c['criterion']} {c['value']:.3f} (limit {c['limit']:g}, {c['where']})"
                           for c in gate["criteria"])
        out.append(f"- {step['label']}: {'passed' if gate['passed'] else 'failed'}: {checks}")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="medrobust")
    args = parser.parse_args()
    parent = latest_pipeline(args.experiment)
    steps = tracking.load_json_artifact(parent["run_id"], "pipeline/steps.json")
    print(f"pipeline run {parent['run_id']} ({parent['name']})\n")
    print(network_table(steps), "\n")
    print(recap_table(steps), "\n")
    print("accuracy / FNR per attack:\n")
    print(per_attack_table(steps), "\n")
    print("natural corruptions:\n")
    print(corruption_table(steps), "\n")
    print(attack_table(steps), "\n")
    print(poison_table(steps, args.experiment), "\n")
    print(gate_lines(steps), "\n")
    print("step time:", step_times(steps))


if __name__ == "__main__":
    main()
