"""Figures: confusion matrices and training curves. Each returns a matplotlib Figure."""

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: runs log figures, nobody looks at a window
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def confusion_matrix_figure(cm: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """Counts with row-normalised shading (each true class's recall reads along its row)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(1.0 + 0.75 * len(labels), 3.5)  # room for a 2x2 health matrix's title and labels
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="medium")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    # Margins in inches (labels, title, the colourbar's label), not tight_layout: it draws the
    # figure once more to measure it, which doubled its cost, and steps draw one per condition.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=1.0 / width, bottom=1.0 / height, right=1 - 0.8 / width, top=1 - 0.4 / height)
    return fig


def training_curves_figure(history: Mapping[str, list]) -> Figure:
    """Loss and accuracy / macro recall per epoch, train against validation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    left.plot(epochs, history["loss"], label="train loss (class-weighted)")
    if "val_loss" in history:
        left.plot(epochs, history["val_loss"], label="val loss")
    left.set_xlabel("epoch")
    left.legend()
    for key, label in (("accuracy", "train accuracy"), ("val_accuracy", "val accuracy"),
                       ("val_macro_recall", "val macro recall")):
        if key in history:
            right.plot(epochs, history[key], label=label)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def examples_figure(x: np.ndarray, x_adv: np.ndarray, y_true: np.ndarray, pred_clean: np.ndarray, pred_adv: np.ndarray,
                    labels: Sequence[str], eps: float, n: int = 6) -> Figure:
    """Columns of n images: clean, perturbation magnified to fill [0, 1], adversarial; titles
    give true class and both predictions. x, x_adv: (N, H, W, 3) in [0, 1]."""
    n = min(n, len(x))
    scale = 0.5 / max(float(eps), 1e-12)
    height, width = x.shape[1:3]
    gap, head = max(width // 16, 1), int(0.4 * height)  # between columns; above each image, for its title
    rows = [x[:n], np.clip(0.5 + (x_adv[:n] - x[:n]) * scale, 0, 1), x_adv[:n]]
    titles = [[f"true {labels[y_true[j]]}\npred {labels[pred_clean[j]]}" for j in range(n)],
              ["perturbation x{:.0f}".format(scale * 2)] * n, [f"adv pred {labels[pred_adv[j]]}" for j in range(n)]]
    # One mosaic in one axes, not 3 x n axes: each axes' ticks cost more to make and lay out
    # than its image costs to draw (0.5 s a figure, drawn once per attack and model).
    mosaic = np.ones((3 * (head + height), n * (width + gap) - gap, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j in range(n):
            top, left = i * (head + height) + head, j * (width + gap)
            mosaic[top:top + height, left:left + width] = row[j]
    fig = plt.figure(figsize=(2.0 * n, 2.0 * n * mosaic.shape[0] / mosaic.shape[1]))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.imshow(mosaic)
    ax.axis("off")
    for i in range(3):
        for j in range(n):
            ax.text(j * (width + gap) + width / 2, i * (head + height) + head - 0.05 * height, titles[i][j],
                    ha="center", va="bottom", fontsize=8)
    return fig


def perturbation_figure(v: np.ndarray, eps: float) -> Figure:
    """A universal perturbation, scaled from [-eps, eps] to [0, 1]."""
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(np.clip(0.5 + np.asarray(v)[0] * (0.5 / max(float(eps), 1e-12)), 0, 1))
    ax.set_title(f"universal perturbation (eps {eps:.4f})", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    return fig


def sweep_figure(xs: Sequence[float], series: Mapping[str, Sequence[float]], title: str,
                 xlabel: str = "poisoned fraction of the source class") -> Figure:
    """Each metric of `series` ({name: [value per x]}) against xs, on one axis."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in series.items():
        ax.plot(xs, values, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def security_curve_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], metric: str, title: str) -> Figure:
    """One line per attack of `curves` ({attack: (eps, values)}, eps on the [0, 1] image scale)
    against eps in /255 units; y from 0 to 1 when every value is a ratio in [0, 1]."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = []
    for attack, (eps, values) in curves.items():
        eps, values = np.asarray(eps, dtype=float), np.asarray(values, dtype=float)
        ax.plot(eps * 255, values, marker="o", label=str(attack))
        finite.extend(values[np.isfinite(values)].tolist())
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel(metric)
    if all(0 <= v <= 1 for v in finite):
        ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recap_figure(labels: Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                 title: str) -> Figure:
    """The thesis' recap curve (its Figures 5.1 and 5.2): one line per metric of `series`
    ({metric: (values, lows, highs)}, each as long as `labels`) across the stages in `labels`,
    with the 95 % interval as error bars where both bounds are finite."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels)), 4.5))
    x = np.arange(len(labels))
    for metric, (values, lows, highs) in series.items():
        values, lows, highs = (np.asarray(a, dtype=float) for a in (values, lows, highs))
        known = np.isfinite(lows) & np.isfinite(highs)
        err = np.where(known, [values - lows, highs - values], 0.0)
        ax.errorbar(x, values, yerr=err, marker="o", capsize=3, label=metric)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    return _shares_with_legend(fig, ax, title)


def _shares_with_legend(fig, ax, title):
    """The finish of a figure of shares: y from 0 to 1, title, grid, legend."""
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_figure(values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[int | str], title: str, *,
                   reference: float | None = None, colorbar: str = "", xlabel: str = "") -> Figure:
    """A (rows, columns) grid of values in [0, 1], each cell printed; `reference` (the clean
    figure) is said in the title, so a cell reads against it."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(column_labels) + 1.6, 0.9 + 0.42 * len(row_labels)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(column_labels)), [str(c) for c in column_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    ax.set_xlabel(xlabel)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > 0.6 else "white")
    known = reference is not None and np.isfinite(reference)
    ax.set_title(f"{title} (clean {reference:.2f})" if known else title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label=colorbar)
    fig.tight_layout()
    return fig


def certified_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Cohen et al.'s curve: each of `curves` ({name: (radii, values)}) against the L2 radius
    (pixels on the [0, 1] scale), y from 0 to 1; the empirical curve dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (radii, values) in curves.items():
        if len(radii):
            ax.plot(radii, values, marker="o", label=name, linestyle="--" if name.startswith("empirical") else "-")
    ax.set_xlabel("L2 radius ([0, 1] pixel scale)")
    return _shares_with_legend(fig, ax, title)


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str) -> Figure:
    """ROC curve (false positive rate against true positive rate) with its AUC and the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float), label=f"AUC {float(auc):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (dpi 100); closes the figure."""
    import io

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()
