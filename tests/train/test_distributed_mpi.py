"""Data-parallel training under ``mpiexec -n 2`` and ``-n 3`` on this machine's loopback,
held to the single-process run of the same global batches (tests/train/mpi_scripts/train_mlp.py
runs both), and the fault paths: a diverged replica, an exception, a hung rank, a killed
rank. Skipped without mpi4py or mpiexec."""
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import MPIEXEC, load_script, run_mpi

pytest.importorskip("mpi4py")

SCRIPT = Path(__file__).resolve().parent / "mpi_scripts" / "train_mlp.py"
if MPIEXEC is None:
    pytest.skip("no mpiexec", allow_module_level=True)
TIMEOUT = 60


def launch(n, *args):
    return run_mpi(SCRIPT, n, *args, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def single(script):
    """The one-process runs: key -> (parameters, losses, differed)."""
    return {key: script.run(*config) for key, config in script.CONFIGS.items()}


@pytest.fixture(scope="module", params=[2, 3])
def ranks(request, tmp_path_factory):
    """(n, saved results) of every configuration trained on n ranks."""
    path = tmp_path_factory.mktemp("mpi") / f"ranks{request.param}.npz"
    rc, out, _ = launch(request.param, "parity", str(path))
    assert rc == 0, out
    return request.param, dict(np.load(path))


@pytest.mark.parametrize("key", ["sgd64", "adam64"])
def test_float64_ranks_equal_one_process(ranks, single, key):
    n, saved = ranks
    params, losses, differed = single[key]
    # Both runs take the same steps; they differ only in the order of the sums inside the
    # mean loss and the all-reduce: a few ulps (2.2e-16 each) per step, for 20 steps.
    assert np.abs(saved[f"{key}.params"] - params).max() <= 1e-12
    assert np.abs(saved[f"{key}.losses"] - losses).max() <= 1e-12
    # The ranks started from different initial weights (seeded by rank), and the check saw
    # it before the broadcast; the one process never differs from itself.
    assert bool(saved[f"{key}.differed"]) and not differed


def test_float32_ranks_equal_one_process(ranks, single):
    n, saved = ranks
    exact, f32 = single["adam64"][0], single["adam32"][0]
    # The float32 runs, one process or n ranks, each differ from the exact trajectory by
    # their rounding error, of one size but of different realisations (different summation
    # orders). The one-process float32 run's distance from the float64 run (whose own error
    # is ~1e-16) measures that size, r; so |ranks - one| <= |ranks - exact| + |exact - one|
    # ~ 2 r, and a factor 2 more covers the maximum over the 370 parameters of another
    # realisation: tolerance 4 r.
    r = np.abs(f32 - exact).max()
    assert 0 < r < 1e-5
    assert np.abs(saved["adam32.params"] - f32).max() <= 4 * r


def test_diverged_replica_is_named_with_its_step():
    rc, out, _ = launch(2, "desync")
    assert rc != 0
    assert "check_in_sync: the replicas diverged at step 7: 0.weight differs between rank 0 " \
           "and rank 1" in out


def test_exception_on_one_rank_ends_every_rank():
    rc, out, seconds = launch(2, "raise")
    assert rc != 0 and seconds < TIMEOUT
    assert "a planted failure on rank 1" in out
    assert "minigen.distributed: rank 1: uncaught RuntimeError; aborting every rank" in out


def test_hung_rank_is_aborted_by_the_watchdog():
    rc, out, seconds = launch(2, "hang")       # rank 1 sleeps 60 s; the timeout is 3 s
    assert rc != 0 and seconds < 30
    assert "rank 0: check_in_sync waited more than 3 s for the other ranks" in out


def test_killed_rank_ends_the_job():
    # MPICH's Hydra sees the signal and kills the other ranks itself.
    rc, out, seconds = launch(2, "kill")
    assert rc != 0 and seconds < TIMEOUT
    assert "BAD TERMINATION" in out and "Killed (signal 9)" in out
