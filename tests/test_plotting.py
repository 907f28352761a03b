"""lib.plotting: the figure helpers draw what they are given (mean and sd over seeds; every matrix cell)."""
import numpy as np
import pandas as pd

from lib import plotting


def test_seed_curve_draws_the_mean_and_one_sd():
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"layer": [0, 0, 1, 1], "v": [1.0, 3.0, 2.0, 2.0]})
    fig, ax = plt.subplots()
    plotting.seed_curve(ax, df, "layer", "v", label="tuned")
    line = ax.lines[0]
    assert list(line.get_ydata()) == [2.0, 2.0]  # the means
    segments = [c for c in ax.collections if len(c.get_segments())]
    lo, hi = segments[0].get_segments()[0][:, 1]
    assert (lo, hi) == (2.0 - np.sqrt(2), 2.0 + np.sqrt(2))  # sample sd of (1, 3)
    plt.close(fig)


def test_heatmap_annotates_every_cell():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plotting.heatmap(ax, np.array([[1.0, 0.25], [0.25, 1.0]]), labels=["a", "b"], cbar=False)
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.25", "1.00", "1.00"]
    plt.close(fig)
