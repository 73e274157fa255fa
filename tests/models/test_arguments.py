"""Constructor arguments of the auto-encoder family and the GANs: a bad value is a ValueError or
TypeError that names the class and the argument, raised before anything is built; any other
value gives a model that trains and samples."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.models import (GAN, SWAE, VAE, WGANGP, AutoEncoder, HierarchicalVAE,
                            SupervisedAutoEncoder)


@pytest.mark.parametrize("make, where, name", [
    (lambda: VAE(4, 2, hidden=8), "VAE", "hidden"),
    (lambda: VAE(4, 2, beta="a"), "VAE", "beta"),
    (lambda: VAE(4, 2, beta=-1), "VAE", "beta"),
    (lambda: VAE(4, 2, beta=math.nan), "VAE", "beta"),
    (lambda: VAE(16, 2, image_shape=(1, 4, 4), channels=()), "VAE", "channels"),
    (lambda: VAE(4, 2.5), "VAE", "z_dim"),
    (lambda: VAE(4, 2, activation=["relu"]), "VAE", "activation"),
    (lambda: HierarchicalVAE(4, z_dims="ab"), "HierarchicalVAE", "z_dims"),
    (lambda: HierarchicalVAE(4, free_bits=math.nan), "HierarchicalVAE", "free_bits"),
    (lambda: HierarchicalVAE(4, beta=math.inf), "HierarchicalVAE", "beta"),
    (lambda: HierarchicalVAE(4, warmup_steps=2.5), "HierarchicalVAE", "warmup_steps"),
    (lambda: HierarchicalVAE(4, latent_hidden=(0,)), "HierarchicalVAE", "latent_hidden"),
    (lambda: SWAE(4, 2, sw_weight=-1), "SWAE", "sw_weight"),
    (lambda: SWAE(4, 2, n_projections=0), "SWAE", "n_projections"),
    (lambda: SWAE(4, 2, p=0.5), "SWAE", "p"),
    (lambda: AutoEncoder(4, 0), "AutoEncoder", "z_dim"),
    (lambda: SupervisedAutoEncoder(4, 2, 3, classifier_weight=math.nan), "SupervisedAutoEncoder",
     "classifier_weight"),
    (lambda: GAN.mlp(2, z_dim=2, betas=(0.5,)), "GAN", "betas"),
    (lambda: GAN.mlp(2, z_dim=2, betas=(0.5, 1.0)), "GAN", "betas"),
    (lambda: GAN.mlp(2, z_dim=0), "GAN.mlp", "z_dim"),
    (lambda: GAN.mlp(2, z_dim=2, hidden=16), "GAN.mlp", "hidden"),
    (lambda: WGANGP.mlp(2, z_dim=2, gp_weight=math.nan), "WGANGP", "gp_weight"),
    (lambda: WGANGP.mlp(2, z_dim=2, n_critic=2.0), "WGANGP", "n_critic"),
])
def test_a_bad_argument_names_the_class_and_the_argument(make, where, name):
    with pytest.raises(ValueError, match=rf"^{where}: {name} must be"):
        make()


def test_gan_z_dim_must_match_the_generator():
    from minigen.models import MLPDecoder, MLPEncoder
    with pytest.raises(ValueError, match="GAN: z_dim=3 but the generator takes z_dim=2"):
        GAN(MLPDecoder(2, 4), MLPEncoder(4, 1), z_dim=3)


def test_set_params_checks_like_the_constructor():
    model = VAE(4, 2, hidden=(3,))
    with pytest.raises(ValueError, match="VAE: beta must be a finite number >= 0"):
        model.set_params(beta=math.nan)


# --- fuzz: one argument at a time replaced by an arbitrary value ------------------------------
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 6),
    st.floats(-10, 10), st.sampled_from([math.nan, math.inf, -math.inf, np.float32(0.5),
                                         np.int64(3)]),
    st.text(max_size=3), st.sampled_from(["relu", "tanh", "gaussian", "bernoulli", "mse",
                                          "ring", "uniform"]),
    st.tuples(st.integers(-1, 4)), st.tuples(st.integers(-1, 4), st.integers(-1, 4)),
    st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4)),
    st.lists(st.one_of(st.integers(0, 3), st.floats(0, 3), st.text(max_size=1)), max_size=3),
)

# class -> (build(**override), the arguments to fuzz); base sizes keep every model tiny
BUILDERS = {
    VAE: (lambda **kw: VAE(**{"x_dim": 4, "z_dim": 2, "hidden": (3,), "channels": (2,),
                              "rng": 0, **kw}),
          ["x_dim", "z_dim", "hidden", "likelihood", "beta", "activation", "image_shape",
           "channels"]),
    HierarchicalVAE: (lambda **kw: HierarchicalVAE(**{"x_dim": 4, "z_dims": (2, 1),
                                                      "hidden": (3,), "latent_hidden": (2,),
                                                      "channels": (2,), "rng": 0, **kw}),
                      ["z_dims", "latent_hidden", "beta", "warmup_steps", "free_bits",
                       "likelihood", "image_shape"]),
    SWAE: (lambda **kw: SWAE(**{"x_dim": 4, "z_dim": 2, "hidden": (3,), "n_projections": 3,
                                "channels": (2,), "rng": 0, **kw}),
           ["prior", "reconstruction", "sw_weight", "n_projections", "p", "hidden"]),
    AutoEncoder: (lambda **kw: AutoEncoder(**{"x_dim": 4, "z_dim": 2, "hidden": (3,),
                                              "channels": (2,), "rng": 0, **kw}),
                  ["z_dim", "reconstruction", "activation", "image_shape", "channels"]),
    SupervisedAutoEncoder: (lambda **kw: SupervisedAutoEncoder(
        **{"x_dim": 4, "z_dim": 2, "n_classes": 2, "hidden": (3,), "rng": 0, **kw}),
        ["n_classes", "classifier_weight"]),
    GAN: (lambda **kw: GAN.mlp(**{"x_dim": 4, "z_dim": 2, "hidden": (3,), "rng": 0, **kw}),
          ["x_dim", "z_dim", "hidden", "n_critic", "betas"]),
    WGANGP: (lambda **kw: WGANGP.mlp(**{"x_dim": 4, "z_dim": 2, "hidden": (3,), "rng": 0,
                                        **kw}),
             ["gp_weight", "n_critic", "betas"]),
}
CASES = [(cls, name) for cls, (_, names) in BUILDERS.items() for name in names]


def _works(model):
    """One training step and two samples, all finite."""
    X = np.random.default_rng(0).random((8, model.x_dim if hasattr(model, "x_dim")
                                         else model.generator.x_dim))
    if isinstance(model, SupervisedAutoEncoder):
        model.fit(X, np.arange(8) % model.n_classes, steps=1, batch_size=4, rng=0)
    else:
        model.fit(X, steps=1, batch_size=4, rng=0)
    assert np.all(np.isfinite(model.sample(2, rng=0)))


@settings(max_examples=150)
@given(case=st.sampled_from(CASES), value=JUNK)
def test_fuzzed_constructor_argument_is_named_or_works(case, value):
    cls, name = case
    build = BUILDERS[cls][0]
    try:
        model = build(**{name: value})
    except (ValueError, TypeError) as err:
        message = str(err)
        assert message.startswith(cls.__name__) and name in message, message
        return
    _works(model)


@pytest.mark.parametrize("n_components", [0, 2.5, "3"])
def test_autoencoder_fit_checks_n_components_before_training(n_components):
    model = AutoEncoder(2, 2, hidden=(3,), rng=0)
    with pytest.raises(ValueError, match="AutoEncoder.fit: n_components must be a positive int"):
        model.fit(np.zeros((8, 2)), steps=1, n_components=n_components)
    assert not hasattr(model, "n_features_in_")                   # nothing was trained


@pytest.mark.parametrize("make", [
    lambda: VAE(4, 2, hidden=(3,), rng=0), lambda: SWAE(4, 2, hidden=(3,), rng=0),
    lambda: AutoEncoder(4, 2, hidden=(3,), rng=0)], ids=["VAE", "SWAE", "AutoEncoder"])
def test_sample_n_is_an_int_that_can_size_an_array(make):
    """NumPy ints count as ints; floats, and ints no array could hold, are named errors."""
    model = make().fit(np.random.default_rng(0).random((8, 4)), steps=1, batch_size=4, rng=0)
    assert model.sample(np.int64(3), rng=0).shape == (3, 4)
    where = type(model).__name__ + ".sample"
    with pytest.raises(ValueError, match=rf"^{where}: n must be an int >= 0, got 2.0"):
        model.sample(2.0)
    with pytest.raises(ValueError, match=rf"^{where}: n must be at most "
                                         rf"{np.iinfo(np.intp).max} .*, got {2 ** 70}"):
        model.sample(2 ** 70)
