"""Every example runs on its tiny budget (``--quick``), writes its figures and reports numbers
that show its point (the bandwidth trade-off, BIC's choice, ...)."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")
EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


Z = 4.0


def run(name, tmp_path, *argv):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--out", str(tmp_path), *argv])
    figures = result.get("figures") or [v for k, v in result.items()
                                        if isinstance(k, str) and k.endswith("figure")]
    for path in figures:
        assert os.path.dirname(path) == str(tmp_path) and open(path, "rb").read(4) == b"\x89PNG"
    return result


def test_every_example_is_tested():
    names = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py")}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert names <= tested, sorted(names - tested)


def test_kde_bandwidths(tmp_path):
    scores = run("kde_bandwidths", tmp_path)["scores"]
    # too narrow (variance) and too wide (bias) both lose to the cross-validated bandwidth
    assert scores["leave-one-out CV"] > max(scores["h = 0.01"], scores["h = 2.0"])


def test_gmm_bic(tmp_path):
    result = run("gmm_bic", tmp_path)
    assert result["best"] == 8                       # eight Gaussians
    assert result["held_out"][8] > result["held_out"][2]


def test_pca_digits(tmp_path):
    result = run("pca_digits", tmp_path)
    assert result["explained"].sum() == pytest.approx(1.0)
    scores = [result["scores"][k] for k in (2, 8, 32)]
    assert scores == sorted(scores)                  # more components, higher held-out log p


def test_pca_kde(tmp_path):
    results = run("pca_kde", tmp_path)["results"]
    assert all(np.isfinite(r["log_p"]) and r["sw"] > 0 for r in results.values())


def test_latent_digits(tmp_path):
    result = run("latent_digits", tmp_path)
    assert result["mixture"] > result["ppca"]        # a mixture in the code beats one Gaussian


def test_gan_toys(tmp_path):
    results = run("gan_toys", tmp_path)["results"]
    assert len([k for k in results if isinstance(k, tuple)]) == 4
    assert np.isfinite(results["digits sliced W"])


def test_lm_generate(tmp_path):
    result = run("lm_generate", tmp_path)
    bits = result["bits_per_char"]
    assert all(np.isfinite(b) for b in bits.values())
    assert len(result["samples"]) == 6


def test_ae_latents(tmp_path):
    result = run("ae_latents", tmp_path)
    # every auto-encoder reconstructs held-out digits better than the mean digit does
    assert max(result["mse"].values()) < result["mean_digit_mse"]
    assert result["accuracy"] > 0.5                  # ten classes: chance is 0.1
    assert abs(result["ring_radius"] - 1.0) < 0.3    # SWAE codes pulled onto the unit circle


def test_vae_digits(tmp_path):
    result = run("vae_digits", tmp_path)
    for bound in result["bounds"].values():
        # each model beats independent pixels, and IWAE_k tightens the ELBO
        assert bound["iwae"] > bound["elbo"] and bound["iwae"] > result["independent_pixels"]


def test_diffusion_noising(tmp_path):
    result = run("diffusion_noising", tmp_path)
    for k in (100, 500, 999):
        r = result[k]
        # both are draws of one distribution: means within Z standard errors of 2,000 points
        se = np.hypot(r["multi_std"], r["one_std"]) / np.sqrt(2000)
        assert abs(r["multi_mean"] - r["one_mean"]) < Z * se
    assert abs(result[999]["one_std"] - 1) < 0.05        # q(x_T | x_0) is nearly N(0, 1)


def test_diffusion_toys(tmp_path, monkeypatch):
    result = run("diffusion_toys", tmp_path)
    assert abs(result["digits_floor"] - 0.052) < 0.001    # the training digits vs held-out
    for key in ("toy_sw_ancestral", "toy_sw_ddim", "digits_sw", "digits_gaussian"):
        assert np.isfinite(result[key]) and result[key] > 0
    if result["digits_trained_on"] == "1 process":
        pytest.skip("no mpi4py or mpiexec: the digits trained in one process")
    assert result["digits_trained_on"] == "2 MPI ranks"
    # without mpi4py the same command trains in this process, and takes the same steps: the
    # losses agree up to the order of float32 sums (a mean of 64 terms reordered moves by
    # ~64 u = 4e-6)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpi4py" else find_spec(name, *a))
    one = run("diffusion_toys", tmp_path, "--steps", "0")
    assert one["digits_trained_on"] == "1 process"
    np.testing.assert_allclose(result["digits_model"].losses_, one["digits_model"].losses_,
                               rtol=1e-5)
