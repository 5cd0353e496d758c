"""Report figures as PNG bytes (matplotlib Agg, no display, no files until the caller writes them)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from deid.reports.identity import COMPARISONS  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def identity_boxplot(table: pd.DataFrame, threshold: float) -> bytes:
    """The four comparisons as boxes, with the recogniser's threshold line."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    data = [table[c].to_numpy(float) for c in COMPARISONS]
    data = [d[np.isfinite(d)] for d in data]
    positions = [i + 1 for i, d in enumerate(data) if len(d)]
    if positions:
        ax.boxplot([d for d in data if len(d)], positions=positions, widths=0.5, showmeans=True)
    for i, d in enumerate(data):
        if not len(d):
            ax.text(i + 1, threshold, "no face", ha="center", va="bottom", color="grey")
    ax.set_xticks(range(1, 5), [f"{c}\n(n={len(d)})" for c, d in zip(COMPARISONS, data)])
    ax.set_xlim(0.4, 4.6)
    ax.axhline(threshold, color="crimson", linestyle="--", label=f"same-person threshold {threshold:g}")
    ax.set_ylabel("face_recognition distance")
    ax.set_title("Identity distance per comparison (higher SW-OR = identity hidden)")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def au_bars(table: pd.DataFrame, label: str = "AU") -> bytes:
    """Per-AU PCC and RMSE side by side; undefined PCC drawn as an empty slot marked 'n/a'."""
    names = [str(a) for a in table.iloc[:, 0]]
    pcc = np.array([np.nan if v is None else float(v) for v in table["pcc"]], float)
    rmse = np.array([np.nan if v is None else float(v) for v in table["rmse"]], float)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 0.45 * len(names) * 2), 3.8))
    x = np.arange(len(names))
    axes[0].bar(x, np.nan_to_num(pcc), color="steelblue")
    for i in np.flatnonzero(~np.isfinite(pcc)):
        axes[0].text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="grey")
    axes[0].set_ylim(-1, 1)
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].set_title(f"PCC original vs swapped per {label}")
    axes[1].bar(x, np.nan_to_num(rmse), color="darkorange")
    axes[1].set_title(f"RMSE per {label}")
    for ax in axes:
        ax.set_xticks(x, names, rotation=90, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def au_timeseries(original: pd.DataFrame, swapped: pd.DataFrame, max_panels: int = 20) -> bytes:
    """One small panel per column: original and swapped over frames."""
    cols = list(original.columns)[:max_panels]
    ncols = 4
    nrows = max(1, int(np.ceil(len(cols) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 1.9 * nrows), sharex=True, squeeze=False)
    for ax, col in zip(axes.ravel(), cols):
        ax.plot(original.index, original[col].to_numpy(float), linewidth=1, label="original")
        ax.plot(swapped.index, swapped[col].to_numpy(float), linewidth=1, label="swapped")
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(cols):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.supxlabel("frame")
    fig.tight_layout()
    return _png(fig)


def identity_over_time(table: pd.DataFrame, threshold: float) -> bytes:
    """SW-OR and SW-SW per sampled frame over time (or frame index), with the threshold."""
    x = table["time_s"].to_numpy(float)
    label = "time (s)"
    if not np.isfinite(x).all():
        x, label = table["frame"].to_numpy(float), "frame"
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for column, colour in (("SW-OR", "tab:blue"), ("SW-SW", "tab:orange"), ("OR-OR", "tab:grey")):
        ax.plot(x, table[column].to_numpy(float), ".-", color=colour, linewidth=0.8, markersize=3,
                label={"SW-OR": "swapped vs original's photo (high = hidden)",
                       "SW-SW": "swapped vs donor's photo (low = donor)",
                       "OR-OR": "original vs original's photo"}[column])
    ax.axhline(threshold, color="crimson", linestyle="--", linewidth=1, label=f"same-person threshold {threshold:g}")
    ax.set_xlabel(label)
    ax.set_ylabel("face_recognition distance")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Identity distance over the video (gaps: no face found)")
    return _png(fig)


def frame_strip(pairs: list[tuple[str, np.ndarray, np.ndarray]], references: list[tuple[str, np.ndarray]]) -> bytes:
    """Sampled frames side by side: originals on top, swapped below, captioned; the reference photos first."""
    columns = len(references) + len(pairs)
    fig, axes = plt.subplots(2, columns, figsize=(1.9 * columns, 4.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (caption, photo) in enumerate(references):
        axes[0, i].imshow(photo)
        axes[0, i].set_title(caption, fontsize=8)
    for j, (caption, original, swapped) in enumerate(pairs, start=len(references)):
        axes[0, j].imshow(original)
        axes[0, j].set_title("original", fontsize=8)
        axes[1, j].imshow(swapped)
        axes[1, j].set_title(caption, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def comparisons_by_run(runs: dict[str, pd.DataFrame], thresholds: dict[str, float]) -> bytes:
    """The study's figure: for each run, the four comparisons as box plots side by side, under that run's
    own "same person" threshold (runs evaluated with different thresholds are drawn with theirs)."""
    fig, ax = plt.subplots(figsize=(max(6.5, 2.2 * len(runs)), 4))
    colours = dict(zip(COMPARISONS, ("tab:grey", "tab:olive", "tab:blue", "tab:orange")))
    for r, (name, table) in enumerate(runs.items()):
        for c, comparison in enumerate(COMPARISONS):
            values = table[comparison].to_numpy(float)
            values = values[np.isfinite(values)]
            if len(values):
                box = ax.boxplot([values], positions=[r * 5 + c], widths=0.7, patch_artist=True)
                box["boxes"][0].set_facecolor(colours[comparison])
    ax.set_xticks([r * 5 + 1.5 for r in range(len(runs))], list(runs), fontsize=8)
    for r, name in enumerate(runs):
        ax.hlines(thresholds[name], r * 5 - 0.5, r * 5 + 3.5, color="crimson", linestyle="--", linewidth=1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in COMPARISONS]
    ax.legend(handles, COMPARISONS, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylabel("face_recognition distance")
    shown = sorted(set(thresholds.values()))
    ax.set_title(f"Identity distances per run (threshold {', '.join(f'{t:g}' for t in shown)}: dashed)")
    return _png(fig)
