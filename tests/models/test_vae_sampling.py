"""``sample`` of the VAE family against the generative model it states: for linear networks the
model is Gaussian with a closed-form covariance, and the sample covariance must match it."""
import numpy as np

from minigen.models import VAE
from tests.models.test_vae import linear_gaussian_hvae


def assert_covariance_matches(samples, cov, z=4.0):
    """Each entry of the sample covariance within z standard errors of ``cov``: for Gaussian
    rows, Var(S_ij) = (C_ii C_jj + C_ij^2) / (n - 1) (Anderson 2003, Theorem 3.4.4; on the
    diagonal, 2 C_ii^2 / (n - 1), the standard error of a sample variance)."""
    n = len(samples)
    sample_cov = np.cov(samples, rowvar=False)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / (n - 1))
    assert np.all(np.abs(sample_cov - cov) < z * se), (sample_cov, cov, se)


def test_gaussian_vae_samples_have_the_decoder_variance():
    """hidden=(): x = W z + b + e, z ~ N(0, I), e ~ N(0, diag exp(s)), so Cov x = W W^T +
    diag exp(s), with the stated per-feature variances exp(s) = 0.25, 4, 1."""
    model = VAE(3, 2, hidden=(), likelihood="gaussian", rng=0).double()
    model.n_features_in_ = 3
    model.log_var.data[...] = np.log([0.25, 4.0, 1.0])
    W = model.decoder.net[0].weight.numpy()
    X = model.sample(20000, rng=1)
    assert_covariance_matches(X, W @ W.T + np.diag([0.25, 4.0, 1.0]))
    se_mean = np.sqrt(np.diag(W @ W.T) + [0.25, 4.0, 1.0]) / np.sqrt(len(X))
    assert np.all(np.abs(X.mean(0) - model.decoder.net[0].bias.numpy()) < 4 * se_mean)


def test_hierarchical_vae_samples_have_the_generative_covariance():
    """p(z2) = N(0, 1), z1 | z2 ~ N(A z2 + a, D), x | z1 ~ N(W z1 + b, I): Cov x =
    W (A A^T + D) W^T + I (``linear_gaussian_hvae``)."""
    model, mean, cov = linear_gaussian_hvae()
    X = model.sample(20000, rng=2)
    assert_covariance_matches(X, cov)
    se_mean = np.sqrt(np.diag(cov) / len(X))
    assert np.all(np.abs(X.mean(0) - mean) < 4 * se_mean)
