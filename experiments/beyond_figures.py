"""The README's figures beyond attacks, read back from evaluate runs (nothing is measured here):

    .venv/bin/python experiments/beyond_figures.py --corruptions RUN_ID --certified RUN_ID [--out docs]

writes <out>/corruptions.png (the heat map corruption x severity of accuracy and op_fnr, against
the clean figures) from an evaluate run with the corruptions suite, and <out>/certified.png
(Cohen's curve: certified accuracy and FNR against the L2 radius, with the L2 PGD check) from
one with the certified suite, and prints their tables as markdown.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from medrobust import plots, tracking
from medrobust.evaluation.certified import certified_curve
from medrobust.evaluation.records import read_records_csv
from medrobust.evaluation.shift import corruption_grid


def records_of(run_id):
    return read_records_csv(tracking.load_text_artifact(run_id, "report/records.csv"))


def clean(records, metric):
    return next(r["value"] for r in records if r["model"] == "target" and r["threat"] == "clean" and r["metric"] == metric)


def corruption_figure(records, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, metric in zip(axes, ("accuracy", "op_fnr")):
        names, severities, values = corruption_grid(records, model="target", metric=metric)
        image = ax.imshow(values, cmap="viridis" if metric == "accuracy" else "magma_r", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("severity")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color="grey")
        ax.set_title(f"{metric} (clean {clean(records, metric):.2f})")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    mean = {}
    for r in records:
        if r["threat"] == "corruption" and r["attack"] == "mean":
            mean.setdefault(int(r["eps"]), {})[r["metric"]] = r["value"]
    lines = ["| severity | mean accuracy | change from clean (paired) | mean op_fnr | change from clean (paired) |",
             "|---|---|---|---|---|"]
    for s, v in sorted(mean.items()):
        cell = lambda m: f"{v[m]:.3f} [{v[m + '_ci_low']:.3f}, {v[m + '_ci_high']:.3f}]"  # noqa: E731
        lines.append(f"| {s} | {cell('accuracy')} | {cell('change_accuracy')} | {cell('op_fnr')} | "
                     f"{cell('change_op_fnr')} |")
    return "\n".join(lines)


def certified_figure(records, path):
    curves = {m: certified_curve(records, model="target", metric=m)
              for m in ("certified_accuracy", "certified_fnr", "empirical_accuracy")}
    plots.certified_figure(curves, "").savefig(path, dpi=90)
    rows = {}
    for r in records:
        if r["threat"] == "certified":
            rows.setdefault(r["eps"], {})[r["metric"]] = r["value"]
    lines = ["| L2 radius | certified accuracy | certified FNR | empirical accuracy (L2 PGD) | disagreements | "
             "violations |", "|---|---|---|---|---|---|"]
    for radius, v in sorted(rows.items()):
        cell = lambda m: f"{v[m]:.3f} [{v[m + '_ci_low']:.3f}, {v[m + '_ci_high']:.3f}]"  # noqa: E731
        lines.append(f"| {radius:g} | {cell('certified_accuracy')} | {cell('certified_fnr')} | "
                     f"{v.get('empirical_accuracy', np.nan):.3f} | {v.get('disagreements', 0):g} | "
                     f"{v.get('violations', 0):g} |")
    first = rows[0.0]
    return "\n".join(lines) + (f"\n\nsigma {first['certify_sigma']:g}, n {first['certify_n']:g}, alpha "
                               f"{first['certify_alpha']:g}, {first['certify_images']:g} images, "
                               f"{first['certify_seconds_per_image']:.2f} s per image")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corruptions", help="an evaluate run with the corruptions suite")
    parser.add_argument("--certified", help="an evaluate run with the certified suite")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    if args.corruptions:
        print(corruption_figure(records_of(args.corruptions), Path(args.out) / "corruptions.png"), "\n")
    if args.certified:
        print(certified_figure(records_of(args.certified), Path(args.out) / "certified.png"))


if __name__ == "__main__":
    main()
