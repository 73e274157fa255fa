"""A bad rng / random_state is reported by the public call the user made ("moons: rng must be
...", "VAE.fit: rng ..."), not by a helper inside it ("as_rng: ...") nor by a layer it builds."""
import functools

import numpy as np
import pytest

import minigen as mg
from minigen import blockwise, metrics, nn
from minigen.data import load_digits, make_toy, mixture_1d, moons, pinwheel
from minigen.data.batching import batches
from minigen.density import dask_mixture
from minigen.density import KDE, PCA, GaussianMixture, KMeans, LatentDensity, kmeans_plusplus
from minigen.models import (GAN, MLPLM, SWAE, VAE, AutoEncoder, Bigram, ConvDecoder,
                            ConvEncoder, HierarchicalVAE, MLPDecoder, MLPEncoder,
                            SupervisedAutoEncoder, TransformerLM)
from minigen.models.lm import Block, CausalSelfAttention, sample_next
from minigen.models.vae import reparameterize
from minigen.train import train

BAD = [-1, 1.5, "x"]          # a negative seed (ValueError), a float and a str (TypeError)
X = np.random.default_rng(0).standard_normal((40, 2))
U = np.random.default_rng(1).random((40, 2))       # for a Bernoulli likelihood
IDS = np.random.default_rng(0).integers(0, 5, (4, 9))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 1)

    def loss(self, batch):
        return (self.w(batch) ** 2).mean()


@functools.cache
def fitted(kind):
    """One model of each kind, fitted in a step or two (only their rng checks are used)."""
    small = dict(steps=1, batch_size=8)
    if kind == "vae":
        return VAE(2, 1, hidden=(4,), rng=0).fit(U, **small)
    if kind == "swae":
        return SWAE(2, 1, hidden=(4,), rng=0).fit(X, **small)
    if kind == "ae":
        return AutoEncoder(2, 1, hidden=(4,), rng=0).fit(X, n_components=1, **small)
    if kind == "gan":
        return GAN.mlp(2, 1, hidden=(4,), rng=0).fit(X, **small)
    if kind == "lm":
        return TransformerLM(5, block_size=8, n_layer=1, n_head=1, n_embd=4, rng=0).fit(
            IDS, **small)
    if kind == "kde":
        return KDE().fit(X)
    if kind == "gmm":
        return GaussianMixture(2, random_state=0).fit(X)
    if kind == "pca":
        return PCA(1).fit(X)
    if kind == "latent":
        return LatentDensity(PCA(1), GaussianMixture(1, random_state=0)).fit(X)
    raise KeyError(kind)


def _dask_x():
    da = pytest.importorskip("dask.array")
    return da.from_array(X, chunks=10)


# (the public name the error must start with, the argument, the call given a bad rng)
CALLS = [
    # minigen, minigen.functional, minigen.nn
    ("randn", "rng", lambda r: mg.randn(2, 3, rng=r)),
    ("rand", "rng", lambda r: mg.rand(2, rng=r)),
    ("manual_seed", "seed", lambda r: mg.manual_seed(r)),
    ("dropout", "rng", lambda r: mg.functional.dropout(mg.ones(3), 0.5, rng=r)),
    ("nn.init.uniform_", "rng", lambda r: nn.init.uniform_(nn.Linear(2, 2).weight, rng=r)),
    ("nn.init.normal_", "rng", lambda r: nn.init.normal_(nn.Linear(2, 2).weight, rng=r)),
    ("nn.init.xavier_uniform_", "rng",
     lambda r: nn.init.xavier_uniform_(nn.Linear(2, 2).weight, rng=r)),
    ("nn.init.xavier_normal_", "rng",
     lambda r: nn.init.xavier_normal_(nn.Linear(2, 2).weight, rng=r)),
    ("nn.init.kaiming_uniform_", "rng",
     lambda r: nn.init.kaiming_uniform_(nn.Linear(2, 2).weight, rng=r)),
    ("nn.init.kaiming_normal_", "rng",
     lambda r: nn.init.kaiming_normal_(nn.Linear(2, 2).weight, rng=r)),
    ("Linear", "rng", lambda r: nn.Linear(2, 3, rng=r)),
    ("Conv2d", "rng", lambda r: nn.Conv2d(1, 2, 3, rng=r)),
    ("ConvTranspose2d", "rng", lambda r: nn.ConvTranspose2d(1, 2, 3, rng=r)),
    ("Embedding", "rng", lambda r: nn.Embedding(5, 2, rng=r)),
    ("Dropout", "rng", lambda r: nn.Dropout(0.5, rng=r)),
    ("MLP", "rng", lambda r: nn.MLP((2, 3, 1), rng=r)),
    ("MultiheadAttention", "rng", lambda r: nn.MultiheadAttention(4, 2, rng=r)),
    # minigen.models: constructors, fit, sample, generate, networks
    ("VAE", "rng", lambda r: VAE(4, 2, rng=r)),
    ("HierarchicalVAE", "rng", lambda r: HierarchicalVAE(4, rng=r)),
    ("SWAE", "rng", lambda r: SWAE(4, 2, rng=r)),
    ("AutoEncoder", "rng", lambda r: AutoEncoder(4, 2, rng=r)),
    ("SupervisedAutoEncoder", "rng", lambda r: SupervisedAutoEncoder(4, 2, 3, rng=r)),
    ("GAN.mlp", "rng", lambda r: GAN.mlp(2, rng=r)),
    ("Bigram", "rng", lambda r: Bigram(5, rng=r)),
    ("MLPLM", "rng", lambda r: MLPLM(5, rng=r)),
    ("TransformerLM", "rng", lambda r: TransformerLM(5, n_layer=1, n_head=1, n_embd=4, rng=r)),
    ("Block", "rng", lambda r: Block(4, 1, rng=r)),
    ("CausalSelfAttention", "rng", lambda r: CausalSelfAttention(4, 1, rng=r)),
    ("MLPEncoder", "rng", lambda r: MLPEncoder(2, 1, rng=r)),
    ("MLPDecoder", "rng", lambda r: MLPDecoder(1, 2, rng=r)),
    ("ConvEncoder", "rng", lambda r: ConvEncoder(2, rng=r)),
    ("ConvDecoder", "rng", lambda r: ConvDecoder(2, rng=r)),
    ("VAE.fit", "rng", lambda r: VAE(2, 1, hidden=(4,)).fit(U, steps=1, rng=r)),
    ("GAN.fit", "rng", lambda r: GAN.mlp(2, 1, hidden=(4,)).fit(X, steps=1, rng=r)),
    ("Bigram.fit", "rng", lambda r: Bigram(5).fit(IDS, steps=1, rng=r)),
    ("VAE.sample", "rng", lambda r: fitted("vae").sample(2, rng=r)),
    ("VAE.score_samples", "rng", lambda r: fitted("vae").score_samples(U, rng=r)),
    ("SWAE.sample", "rng", lambda r: fitted("swae").sample(2, rng=r)),
    ("SWAE.sample_prior", "rng", lambda r: fitted("swae").sample_prior(2, rng=r)),
    ("AutoEncoder.sample", "rng", lambda r: fitted("ae").sample(2, rng=r)),
    ("GAN.sample", "rng", lambda r: fitted("gan").sample(2, rng=r)),
    ("TransformerLM.sample", "rng", lambda r: fitted("lm").sample(1, rng=r, max_new_tokens=2)),
    ("TransformerLM.generate", "rng", lambda r: fitted("lm").generate(IDS[0, :3], 2, rng=r)),
    ("sample_next", "rng", lambda r: sample_next(np.zeros((2, 5)), rng=r)),
    ("reparameterize", "rng",
     lambda r: reparameterize(mg.zeros(2, 1), mg.zeros(2, 1), rng=r)),
    # minigen.density
    ("KDE.sample", "rng", lambda r: fitted("kde").sample(2, rng=r)),
    ("GaussianMixture.fit", "random_state", lambda r: GaussianMixture(random_state=r).fit(X)),
    ("GaussianMixture.sample", "rng", lambda r: fitted("gmm").sample(2, rng=r)),
    ("KMeans.fit", "random_state", lambda r: KMeans(2, random_state=r).fit(X)),
    ("kmeans_plusplus", "rng", lambda r: kmeans_plusplus(X, 2, rng=r)),
    ("PCA.fit", "random_state",
     lambda r: PCA(1, svd_solver="randomized", random_state=r).fit(X)),
    ("PCA.sample", "rng", lambda r: fitted("pca").sample(2, rng=r)),
    ("PCA.sample_residual", "rng", lambda r: fitted("pca").sample_residual(2, rng=r)),
    ("LatentDensity.sample", "rng", lambda r: fitted("latent").sample(2, rng=r)),
    # minigen.metrics
    ("sliced_wasserstein", "rng", lambda r: metrics.sliced_wasserstein(X, X, rng=r)),
    ("sliced_wasserstein_loss", "rng", lambda r: metrics.sliced_wasserstein_loss(X, X, rng=r)),
    ("random_directions", "rng", lambda r: metrics.random_directions(2, 3, rng=r)),
    ("median_bandwidth", "rng", lambda r: metrics.median_bandwidth(X, X, max_points=10, rng=r)),
    # minigen.data, minigen.train
    ("moons", "rng", lambda r: moons(10, rng=r)),
    ("pinwheel", "rng", lambda r: pinwheel(10, rng=r)),
    ("mixture_1d", "rng", lambda r: mixture_1d(10, rng=r)),
    ("make_toy", "rng", lambda r: make_toy("circles", 10, rng=r)),
    ("load_digits", "seed", lambda r: load_digits("train", seed=r)),
    ("batches", "rng", lambda r: next(batches(X, 4, rng=r))),
    ("train", "rng",
     lambda r: train(_Tiny(), np.ones((8, 2)), steps=1, batch_size=4, rng=r, verbose=False)),
    # Dask (minigen.blockwise, minigen.density.dask_*): skipped without dask
    ("blockwise.sample", "rng", lambda r: blockwise.sample(fitted("gmm"), 5, rng=r)),
    ("KDE.sample", "rng", lambda r: KDE().fit(_dask_x()).sample(2, rng=r)),
    ("sliced_wasserstein", "rng",
     lambda r: metrics.sliced_wasserstein(_dask_x(), _dask_x(), rng=r)),
    ("kmeans_parallel", "rng", lambda r: dask_mixture.kmeans_parallel(_dask_x(), 2, r)),
    ("kmeans", "rng", lambda r: dask_mixture.kmeans(_dask_x(), 2, r)),
]


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize("where, name, call", CALLS, ids=[c[0] for c in CALLS])
def test_a_bad_rng_names_the_users_call(where, name, call, bad):
    if where == "blockwise.sample":
        pytest.importorskip("dask.array")
    with pytest.raises((TypeError, ValueError)) as info:
        call(bad)
    assert str(info.value).startswith(f"{where}: {name} must be "), str(info.value)


def test_layers_seeded_alike_by_one_int_are_unchanged():
    """A layer that checks its rng before handing it on draws as before: each part seeded by
    an int seed starts from that seed (so Linear's weight and bias share a stream's start)."""
    layer = nn.Linear(3, 2, rng=7)
    expect = np.random.default_rng(7).uniform(-3 ** -0.5, 3 ** -0.5, (2, 3))
    np.testing.assert_array_equal(layer.weight.numpy(), expect.astype(layer.weight.dtype))
    np.testing.assert_array_equal(layer.bias.numpy(), expect.ravel()[:2].astype(layer.bias.dtype))
