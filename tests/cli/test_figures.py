"""The figures the command draws: every sample asked for is drawn, grids have no empty
panels, and a title never covers the text under it."""
import numpy as np
import pytest

import minigen as mg
from minigen.cli import app

pytest.importorskip("matplotlib")
plot = pytest.importorskip("minigen.plot")


def drawn_images(fig):
    """How many 8x8 images each panel shows (a grid's NaN cells are padding)."""
    return [int(np.isfinite(ax.images[0].get_array()).sum()) // 64 for ax in fig.axes
            if ax.images]


@pytest.mark.filterwarnings("ignore:KDE.fit. the data covariance is singular")
def test_sample_draws_every_digit_asked_for(tmp_path, monkeypatch):
    model = tmp_path / "kde.npz"
    assert app.main(["fit", "kde", "--data", "digits", "-o", str(model)]) == 0
    figures = []
    monkeypatch.setattr(plot, "save", lambda fig, path: figures.append(fig) or path)
    assert app.main(["sample", str(model), "-n", "64", "-o", str(tmp_path / "d.png")]) == 0
    (fig,) = figures
    assert drawn_images(fig) == [64]
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (8 * 9 + 1, 8 * 9 + 1)            # 8 x 8 images, 1-pixel padding
    assert "64 samples" in fig._suptitle.get_text()


@pytest.mark.parametrize("n_panels, shape", [(8, (2, 4)), (7, (2, 4)), (5, (1, 5)),
                                             (11, (3, 4))])
def test_panel_grids_are_balanced(n_panels, shape):
    rng = np.random.default_rng(0)
    fig = plot.scatter_panels([(str(k), rng.normal(size=(20, 2))) for k in range(n_panels)])
    rows, cols = shape
    assert len(fig.axes) == rows * cols
    assert sum(ax.axison for ax in fig.axes) == n_panels
    assert rows * cols - n_panels < cols                   # never a whole empty row
    plot.pyplot().close(fig)


@pytest.mark.parametrize("lines", [1, 12, 40])
def test_text_title_sits_above_the_first_line(lines):
    fig = plot.text_panel("\n".join(f"line {k} " + "x" * 60 for k in range(lines)),
                          "generated text")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent(renderer)
    (body,) = [t for t in fig.texts if t is not fig._suptitle]
    text = body.get_window_extent(renderer)
    assert title.y0 >= text.y1                             # no overlap
    assert text.y0 >= 0 and title.y1 <= fig.bbox.height    # both inside the figure
    plot.pyplot().close(fig)
