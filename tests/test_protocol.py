"""Every distribution in minigen holds to one protocol (minigen.distribution): fit -> self,
sample(n, rng=None, *, ...) with seeded reproducibility, score == mean(score_samples), log_prob
the same method, clear errors for bad input and before fit, NoDensityError where no density is
defined, and a save_model / load_model round trip that reproduces scores and samples.

A new model joins by adding one entry to MODELS: how to build it, how to fit it on the toy
data (small budgets: the suite stays fast), whether it has a density, and any keyword its
scoring needs to be deterministic (DDPM's bound draws noise: rng=0).
"""
import numpy as np
import pytest

import minigen as mg
from minigen.data import make_toy
from minigen.density import KDE, PCA, GaussianMixture, LatentDensity
from minigen.distribution import Distribution, NoDensityError, NotFittedError
from minigen.models import DDPM, GAN, WGANGP, NoiseSchedule, TimeMLP
from minigen.models import SWAE, VAE, AutoEncoder, HierarchicalVAE, SupervisedAutoEncoder


class Entry:
    """make() -> an unfitted model; fit(model, X) -> the fitted model; density: whether
    score_samples exists; score_kw: keywords that make scoring deterministic."""

    def __init__(self, make, fit=None, density=True, score_kw=None):
        self.make, self.density, self.score_kw = make, density, score_kw or {}
        self.fit = fit or (lambda model, X: model.fit(X))


MODELS = {
    "kde": Entry(lambda: KDE()),
    "gmm": Entry(lambda: GaussianMixture(3, random_state=0)),
    "pca": Entry(lambda: PCA(1)),
    "latent": Entry(lambda: LatentDensity(PCA(1), GaussianMixture(2, random_state=0))),
    "ddpm": Entry(lambda: DDPM(TimeMLP(2, hidden=16, depth=2, rng=0), NoiseSchedule(T=20),
                               rng=0),
                  fit=lambda model, X: model.fit(X, steps=40, batch_size=64, lr=3e-3),
                  score_kw={"rng": 0}),
    "ae": Entry(lambda: AutoEncoder(2, 2, hidden=(16,), rng=0),
                fit=lambda model, X: model.fit(X, steps=30, lr=3e-3, n_components=3),
                density=False),
    "supervised-ae": Entry(lambda: SupervisedAutoEncoder(2, 2, 2, hidden=(16,), rng=0),
                           fit=lambda model, X: model.fit(X, (X[:, 1] > 0.25).astype(int),
                                                          steps=30, lr=3e-3, n_components=4),
                           density=False),
    "swae": Entry(lambda: SWAE(2, 2, hidden=(16,), n_projections=8, rng=0),
                  fit=lambda model, X: model.fit(X, steps=30, lr=3e-3), density=False),
    "vae": Entry(lambda: VAE(2, 2, hidden=(16,), likelihood="gaussian", rng=0),
                 fit=lambda model, X: model.fit(X, steps=30, lr=3e-3), score_kw={"rng": 0}),
    "hvae": Entry(lambda: HierarchicalVAE(2, (2, 2), hidden=(16,), latent_hidden=(8,),
                                          likelihood="gaussian", rng=0),
                  fit=lambda model, X: model.fit(X, steps=30, lr=3e-3),
                  score_kw={"rng": 0, "k": 3}),
    "gan": Entry(lambda: GAN.mlp(2, z_dim=2, hidden=(16,), rng=0),
                 fit=lambda model, X: model.fit(X, steps=20, batch_size=64), density=False),
    "wgan-gp": Entry(lambda: WGANGP.mlp(2, z_dim=2, hidden=(16,), rng=0),
                     fit=lambda model, X: model.fit(X, steps=20, batch_size=64), density=False),
}


@pytest.fixture(scope="module")
def toy():
    X = make_toy("moons", 300, rng=0)
    return X[:200], X[200:]


@pytest.fixture(scope="module")
def fitted(toy):
    """Each model fitted once on the training half (fits are the slow part)."""
    cache = {}

    def get(name):
        if name not in cache:
            entry = MODELS[name]
            model = entry.make()
            assert entry.fit(model, toy[0]) is model          # fit returns self
            cache[name] = model
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(MODELS))
def test_is_a_distribution_with_constructor_params(name):
    model = MODELS[name].make()
    assert isinstance(model, Distribution)
    params = model.get_params(deep=False)
    rebuilt = type(model)(**params)                            # every argument stored as given
    assert rebuilt.get_params(deep=False).keys() == params.keys()
    assert type(model).__name__ in mg.distribution.registry()
    assert mg.distribution.models()[name] is type(model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_shape_dtype_and_seeded_reproducibility(name, toy, fitted):
    model = fitted(name)
    a = model.sample(50, rng=1)
    assert a.shape == (50, 2) and a.dtype.kind == "f" and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, model.sample(50, rng=1))
    assert not np.array_equal(a, model.sample(50, rng=2))
    np.testing.assert_array_equal(a, model.sample(50, np.random.default_rng(1)))  # rng 2nd
    assert model.sample(0, rng=1).shape == (0, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_is_the_mean_of_score_samples_and_log_prob_is_the_same(name, toy, fitted):
    entry, model = MODELS[name], fitted(name)
    if not entry.density:
        for method in (model.score_samples, model.log_prob, model.score):
            with pytest.raises(NoDensityError, match="defines no density"):
                method(toy[1])
        return
    per_sample = model.score_samples(toy[1], **entry.score_kw)
    assert per_sample.shape == (len(toy[1]),) and np.all(np.isfinite(per_sample))
    np.testing.assert_array_equal(model.log_prob(toy[1], **entry.score_kw), per_sample)
    assert model.score(toy[1], **entry.score_kw) == pytest.approx(per_sample.mean(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bad_input_is_a_clear_error(name, toy, fitted):
    entry, model = MODELS[name], fitted(name)
    with pytest.raises(ValueError, match="n must be"):
        model.sample(-1)
    with pytest.raises(ValueError, match="n must be"):
        model.sample(2.5)
    if not entry.density:
        return
    X = toy[1][:5].copy()
    X[2, 1] = np.nan
    cases = [(X, ValueError, "NaN"), (np.ones((4, 3)), ValueError, "3"),
             (np.zeros((0, 2)), ValueError, "sample"),
             ([["a", "b"]], (TypeError, ValueError), "numeric")]
    for bad, error, match in cases:
        with pytest.raises(error, match=match):
            model.score_samples(bad, **entry.score_kw)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unfitted_model_raises_not_fitted(name, toy):
    entry, model = MODELS[name], MODELS[name].make()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.sample(3, rng=0)
    if entry.density:
        with pytest.raises(NotFittedError, match="not fitted"):
            model.score_samples(toy[1], **entry.score_kw)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_model_load_model_round_trip(name, toy, fitted, tmp_path):
    entry, model = MODELS[name], fitted(name)
    path = tmp_path / f"{name}.npz"
    mg.save_model(model, path)
    again = mg.load_model(path)
    assert type(again) is type(model) and again is not model
    assert repr(again.get_params(deep=False).keys()) == repr(model.get_params(deep=False).keys())
    np.testing.assert_array_equal(again.sample(20, rng=3), model.sample(20, rng=3))
    if entry.density:
        np.testing.assert_array_equal(again.score_samples(toy[1], **entry.score_kw),
                                      model.score_samples(toy[1], **entry.score_kw))
    unfitted = entry.make()                                    # an unfitted model saves too
    mg.save_model(unfitted, tmp_path / "unfitted.npz")
    with pytest.raises(NotFittedError):
        mg.load_model(tmp_path / "unfitted.npz").sample(2, rng=0)


# --- components that models are built from -----------------------------------------------------
def test_components_rebuild_through_save_model(tmp_path):
    from minigen.models import TinyUNet
    custom = NoiseSchedule.from_betas(np.linspace(0.01, 0.3, 7))
    model = DDPM(TinyUNet(in_channels=1, channels=4, emb_dim=8, rng=0), custom, shape=(1, 4, 4),
                 prediction="v")
    mg.save_model(model, tmp_path / "m.npz")
    again = mg.load_model(tmp_path / "m.npz")
    assert again.schedule.kind == "custom" and again.prediction == "v"
    np.testing.assert_array_equal(again.schedule.betas, custom.betas)
    assert again.denoiser.get_params() == model.denoiser.get_params()
    x, t = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32), [3, 5]
    np.testing.assert_array_equal(again.predict_eps(x, np.array(t)),
                                  model.predict_eps(x, np.array(t)))
    with pytest.raises(ValueError, match="betas= goes with kind='custom'"):
        NoiseSchedule(kind="linear", betas=custom.betas)


def test_time_embedding_of_a_huge_t_is_computed_not_tabled():
    from minigen.models import timestep_embedding
    net = TimeMLP(2, hidden=4, emb_dim=8, rng=0)
    x = mg.tensor(np.zeros((2, 2), dtype=np.float32))
    out = net(x, t=np.array([2 ** 40, 2 ** 40]))              # a table would need 16 TiB
    assert out.shape == (2, 2) and np.all(np.isfinite(out.numpy()))
    mixed = net(x, t=np.array([2 ** 40, 3])).numpy()
    np.testing.assert_allclose(mixed[1], net(x, t=np.array([3, 3])).numpy()[1], rtol=1e-6)
    e = timestep_embedding(np.array([2 ** 40]), 8)
    assert e.shape == (1, 8) and np.all(np.abs(e) <= 1)
