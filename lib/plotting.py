"""Plot style and small helpers shared by the report modules (boilerplate stays out of the pages). Computed prose is
Markdown returned by report functions (`lib.page.md`), never printed as a side effect."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() == "agg" else None
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = {"base": "#4c72b0", "tuned": "#dd8452", "scratch": "#55a868", "control": "#8172b3",
           "english": "#4c72b0", "python": "#dd8452", "lua": "#55a868", "stories": "#c44e52"}


def setup() -> None:
    """One style for every figure: readable at book width, no top/right spines."""
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (7.5, 3.6),
                         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.alpha": 0.3, "font.size": 10, "legend.frameon": False})


def finish(fig):
    """Lay out `fig`, detach it from pyplot and return it: a plot function returns `finish(fig)`, so the figure
    is shown once, as the notebook cell's value (pyplot would otherwise show it a second time at the cell's end)."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def seed_curve(ax, df, x: str, y: str, label: str | None = None, color=None, ls: str = "-", **kw):
    """One curve of `y` against `x` over seeds (seaborn): the mean at each `x` with a ±1 sd error bar across the
    rows that share it (one row per seed). A single seed draws the line without bars."""
    import seaborn as sns

    sns.lineplot(data=df, x=x, y=y, errorbar="sd", err_style="bars", marker="o", markersize=4, label=label,
                 color=color, linestyle=ls, ax=ax, err_kws={"capsize": 3}, **kw)
    ax.set(xlabel=None, ylabel=None)
    return ax


def heatmap(ax, matrix, labels=None, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis",
            annotate: bool = True, fmt: str = ".2f", **kw):
    """A matrix as a seaborn heatmap, each cell annotated with its value, `labels` on both axes."""
    import seaborn as sns

    sns.heatmap(matrix, vmin=vmin, vmax=vmax, cmap=cmap, annot=annotate, fmt=fmt, ax=ax, square=True,
                xticklabels=labels if labels is not None else "auto",
                yticklabels=labels if labels is not None else "auto", annot_kws={"fontsize": 7}, **kw)
    return ax
