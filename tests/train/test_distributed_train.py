"""``minigen.train.train`` data-parallel under ``mpiexec -n 2`` and ``-n 3`` on this machine's
loopback, held to the one-process run of the same global batches
(tests/train/mpi_scripts/train_models.py runs both): an MLP with dropout, a conv VAE with a
ragged validation batch, WGAN-GP (two optimisers), a TransformerLM weighted by tokens; a
checkpoint written on 2 ranks resumed on 1 and on 3; a killed rank. Skipped without mpi4py or
mpiexec."""
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import MPIEXEC, load_script, run_mpi

pytest.importorskip("mpi4py")

from minigen.train import load_checkpoint  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "mpi_scripts" / "train_models.py"
if MPIEXEC is None:
    pytest.skip("no mpiexec", allow_module_level=True)
TIMEOUT = 90


def launch(n, *args):
    return run_mpi(SCRIPT, n, *args, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def single(script):
    """The one-process runs: key -> (parameters, losses, validations)."""
    return {key: script.run(key) for key in script.MODELS}


@pytest.fixture(scope="module", params=[2, 3])
def ranks(request, tmp_path_factory):
    """(n, saved results) of every model trained on n ranks."""
    path = tmp_path_factory.mktemp("mpi") / f"ranks{request.param}.npz"
    rc, out, _ = launch(request.param, "parity", path)
    assert rc == 0, out
    return request.param, dict(np.load(path))


def assert_same_run(params, losses, val, reference):
    """Equal to the one-process run up to summation order: each step's sums differ by a few
    ulps (2.2e-16 relative) between the two runs, and 20 steps of these tiny models keep that
    below 1e-12, relative to the size of a loss (the VAE's is ~40 nats)."""
    ref_params, ref_losses, ref_val = reference
    assert np.abs(params - ref_params).max() <= 1e-12
    assert np.abs(losses - ref_losses).max() <= 1e-12 * max(1.0, np.abs(ref_losses).max())
    assert val.shape == ref_val.shape
    if val.size:
        assert np.array_equal(val[:, 0], ref_val[:, 0])
        assert np.abs(val[:, 1] - ref_val[:, 1]).max() <= 1e-12 * np.abs(ref_val[:, 1]).max()


@pytest.mark.parametrize("key", ["mlp64", "vae64", "gan64", "lm64"])
def test_float64_ranks_take_the_one_process_steps(ranks, single, key):
    n, saved = ranks
    assert_same_run(saved[f"{key}.params"], saved[f"{key}.losses"], saved[f"{key}.val"],
                    single[key])


def test_float32_ranks_take_the_one_process_steps(ranks, single):
    n, saved = ranks
    exact, f32 = single["mlp64"][0], single["mlp32"][0]
    # mlp32 is mlp64 in float32. Its rounding error, one process or n ranks, has one size but
    # different realisations (different summation orders). The one-process float32 run's
    # distance from the float64 run (whose own error is ~1e-16) measures that size, r; so
    # |ranks - one| <= |ranks - exact| + |exact - one| ~ 2 r, and a factor 2 more covers the
    # maximum over the 98 parameters of another realisation: tolerance 4 r.
    r = np.abs(f32 - exact).max()
    assert 0 < r < 1e-5
    assert np.abs(saved["mlp32.params"] - f32).max() <= 4 * r


@pytest.fixture(scope="module")
def saved_on_two(script, tmp_path_factory):
    """A checkpoint of vae64 written at step HALF by 2 ranks."""
    path = tmp_path_factory.mktemp("resume") / "c.npz"
    rc, out, _ = launch(2, "save", path)
    assert rc == 0, out
    assert load_checkpoint(path).step == script.HALF
    return path


def test_checkpoint_of_two_ranks_resumes_on_one(script, single, saved_on_two):
    assert_same_run(*script.run("vae64", resume=saved_on_two), single["vae64"])


def test_checkpoint_of_two_ranks_resumes_on_three(single, saved_on_two, tmp_path):
    rc, out, _ = launch(3, "resume", saved_on_two, tmp_path / "r.npz")
    assert rc == 0, out
    saved = np.load(tmp_path / "r.npz")
    assert_same_run(saved["params"], saved["losses"], saved["val"], single["vae64"])


def test_killed_rank_ends_the_job_and_the_last_checkpoint_loads(tmp_path):
    # Rank 1 dies by SIGKILL in the loss of step 7; checkpoints are written every 2 steps.
    # MPICH's Hydra sees the signal and ends rank 0; the checkpoint on disk is the last one
    # written whole (atomic writes): step 6, or step 4 when rank 0 was still writing step 6.
    path = tmp_path / "c.npz"
    rc, out, seconds = launch(2, "kill", path)
    assert rc != 0 and seconds < TIMEOUT
    assert "BAD TERMINATION" in out and "Killed (signal 9)" in out
    assert load_checkpoint(path).step in (4, 6)
