"""The demo's report parts on tiny inputs: the training curves ``run_models`` collects (one per
model trained by steps, with its held-out losses when given a validation set), the curves
figure (a panel per model), and report.html's generated-text blocks."""
import html.parser

import numpy as np
import pytest

import minigen as mg
from minigen.cli import demo, report


def test_run_models_keeps_a_training_curve_per_model_trained_by_steps(capsys):
    X, Xte = mg.data.moons(200, rng=0), mg.data.moons(100, rng=1)
    runs = [demo.Run("KDE", "kde"),
            demo.Run("AE", "ae", {"z_dim": 2, "hidden": (8,)}, steps=(7, 4))]
    rows, fitted, curves = demo.run_models(runs, X, Xte, None, quick=True, quiet=True,
                                           validation=Xte[:50])
    assert [title for title, _, _ in rows] == ["KDE", "AE, 4 steps"]
    assert set(fitted) == {"KDE", "AE"}
    [(title, history, validation)] = curves
    assert title == "AE, 4 steps"
    assert list(history) and all(len(v) == 4 and np.isfinite(v).all()
                                 for v in history.values())
    # 4 steps, VALIDATIONS = 5: every step is scored, by the model's loss on the held-out rows
    ae = fitted["AE"]
    assert [step for step, _ in validation] == [1, 2, 3, 4]
    with mg.no_grad():
        final = float(ae.loss(Xte[:50].astype(ae.dtype)).item())
    assert validation[-1][1] == pytest.approx(final, rel=1e-5)


def test_run_title_states_the_budget():
    run = demo.Run("GAN", "gan", steps=(1500, 40))
    assert run.title(quick=False) == "GAN, 1,500 steps" and run.title(quick=True) == "GAN, 40 steps"
    assert demo.Run("KDE", "kde").title(quick=False) == "KDE"


def test_training_curves_draws_one_panel_per_model_with_its_validation():
    plot = pytest.importorskip("minigen.plot")
    pytest.importorskip("matplotlib")
    losses = np.linspace(3.0, 1.0, 200)
    fig = plot.training_curves([("A, 200 steps", {"loss": losses}, [(100, 2.5), (200, 2.0)]),
                                ("B, 200 steps", {"d_loss": losses, "g_loss": losses[::-1]},
                                 [])], title="curves")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["A, 200 steps", "B, 200 steps"]
    a, b = axes
    assert [line.get_label() for line in a.get_lines()] == ["loss", "validation"]
    assert list(a.get_lines()[1].get_xdata()) == [100, 200]
    assert [line.get_label() for line in b.get_lines()] == ["d_loss", "g_loss"]
    # the moving average over 200 // 50 = 4 steps of a straight line is the line itself
    x, y = a.get_lines()[0].get_data()
    assert len(y) == 197 and np.allclose(y, 3.0 - 2.0 * (x - 1) / 199)
    plot.pyplot().close(fig)


def test_moving_average_is_the_mean_of_each_window():
    from minigen.plot import moving_average
    v = np.array([1.0, 2.0, 6.0, 3.0])
    assert np.allclose(moving_average(v, 2), [1.5, 4.0, 4.5])
    assert np.allclose(moving_average(v, 1), v) and np.allclose(moving_average(v, 9), v)


class _Generated(html.parser.HTMLParser):
    """heading -> the texts of the <pre> blocks after each <h3>; the figure captions."""

    def __init__(self):
        super().__init__()
        self.generated, self.captions, self._tag, self._heading = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        self._tag = tag

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h3":
            self._heading = data
        elif self._tag == "pre":
            self.generated.setdefault(self._heading, []).append(data)
        elif self._tag == "figcaption":
            self.captions.append(data)


def test_report_shows_each_models_samples_escaped_and_each_figure_caption(tmp_path):
    fig = tmp_path / "f.png"
    fig.write_bytes(b"\x89PNG")
    samples = ["def f(x):\n    return x<y", "<b>bold</b> & co"]
    page = report.write(tmp_path / "r.html", "t", [
        report.Section("Text", figures=[(str(fig), "curves, 300 steps")],
                       texts=[("LM, 300 steps", samples), ("Bigram, 600 steps", ["ab"])])])
    parser = _Generated()
    parser.feed(open(page, encoding="utf-8").read())
    assert parser.generated == {"LM, 300 steps": samples, "Bigram, 600 steps": ["ab"]}
    assert parser.captions == ["curves, 300 steps"]
