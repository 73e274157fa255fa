"""GAN data_scale: the networks see x / s and samples come out as G(z) s; WGANGP.for_data
picks the WGAN-GP toy code's scale (s = 2 sd, lambda 0.1) for rows."""
import numpy as np
import pytest

from minigen.models import GAN, WGANGP


def _rows(n=256, rng=0):
    rng = np.random.default_rng(rng)
    return rng.normal(size=(n, 2)) * np.array([3.0, 0.5]) + np.array([4.0, -1.0])


@pytest.mark.parametrize("cls", [GAN, WGANGP])
def test_training_on_x_with_scale_s_is_training_on_x_over_s(cls):
    X, s = _rows(), 2.5
    scaled = cls.mlp(2, hidden=(16,), data_scale=s, rng=0)
    plain = cls.mlp(2, hidden=(16,), rng=0)
    scaled.fit(X, steps=12, batch_size=64, verbose=False, rng=0)
    plain.fit(X / s, steps=12, batch_size=64, verbose=False, rng=0)
    for a, b in zip(scaled.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scaled.sample(50, rng=1), plain.sample(50, rng=1) * s,
                               rtol=1e-4, atol=1e-5)


def test_for_data_on_rows_takes_the_toy_recipe_scale_unless_given():
    X = _rows()
    model = WGANGP.for_data(X)
    assert model.data_scale == pytest.approx(2 * X.std())
    assert model.gp_weight == 0.1
    given = WGANGP.for_data(X, data_scale=1.0, gp_weight=10.0)
    assert (given.data_scale, given.gp_weight) == (1.0, 10.0)
    assert GAN.for_data(X).data_scale is None          # the plain GAN keeps the data as it is
    image = WGANGP.for_data(np.zeros((4, 64)), image_shape=(1, 8, 8))
    assert image.data_scale is None and image.gp_weight == 10.0


@pytest.mark.parametrize("bad", [0, -1.0, np.nan, "2"])
def test_a_bad_scale_names_the_argument(bad):
    with pytest.raises((TypeError, ValueError), match="data_scale"):
        WGANGP.mlp(2, data_scale=bad)


def test_the_scale_survives_save_and_load(tmp_path):
    import minigen as mg
    model = WGANGP.for_data(_rows())
    model.fit(_rows(), steps=5, batch_size=64, verbose=False, rng=0)
    mg.save_model(model, tmp_path / "w.npz")
    loaded = mg.load_model(tmp_path / "w.npz")
    assert loaded.data_scale == model.data_scale
    np.testing.assert_array_equal(loaded.sample(20, rng=3), model.sample(20, rng=3))
