"""minigen.distributed in one process: the launcher detection, the missing-MPI error,
sharding, per-example noise, and the collectives' single-process identities. The runs
under mpiexec are in test_distributed_mpi.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minigen import distributed as dist
from minigen import nn
from minigen.autograd import Tensor


def test_plain_python_imports_no_mpi():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    code = ("import sys, minigen; assert 'mpi4py' not in sys.modules; "
            "import minigen.distributed as d; print(d.world(), 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0, 1) False"


def test_missing_mpi4py_is_one_line(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(dist._state, "MPI", None)
    with pytest.raises(ImportError) as err:
        dist.world()
    assert str(err.value) == ("minigen.distributed needs mpi4py and MPICH: "
                              "pip install -e '.[dist]'")


def test_shard_bounds_are_contiguous_balanced_and_cover():
    assert [dist.shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    for n in range(0, 26):
        for size in range(1, 6):
            bounds = [dist.shard_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_shard_keeps_the_batch_form_and_checks_arguments():
    X, y = np.arange(20).reshape(10, 2), np.arange(10)
    parts = [dist.shard((X, y), r, 3) for r in range(3)]
    assert all(isinstance(p, tuple) for p in parts)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    np.testing.assert_array_equal(dist.shard(y, 2, 3), y[6:])
    with pytest.raises(ValueError, match=r"shard_bounds: rank must be an int in \[0, 2\], "
                                         r"got 3"):
        dist.shard(y, 3, 3)
    with pytest.raises(ValueError, match="shard: the arrays of the batch have different"):
        dist.shard((X, y[:5]), 0, 2)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_per_example_noise_does_not_depend_on_the_number_of_ranks(size):
    total, seed = 10, 7
    single = np.random.default_rng(seed)
    t_one = single.integers(0, 50, size=total)
    eps_one = single.standard_normal((total, 3))
    t_parts, eps_parts, states = [], [], []
    for rank in range(size):
        rng = np.random.default_rng(seed)          # every rank holds the same state
        lo, hi = dist.shard_bounds(total, rank, size)
        with dist.sharded(lo, hi, total):
            t_parts.append(dist.per_example(rng.integers, hi - lo, 0, 50))
            eps_parts.append(dist.per_example(rng.standard_normal, (hi - lo, 3)))
        states.append(rng.bit_generator.state)
    np.testing.assert_array_equal(np.concatenate(t_parts), t_one)
    np.testing.assert_array_equal(np.concatenate(eps_parts), eps_one)
    assert all(s == single.bit_generator.state for s in states)


def test_per_example_checks_the_shape_against_the_shard():
    rng = np.random.default_rng(0)
    with dist.sharded(3, 6, 10), pytest.raises(ValueError, match=r"this rank's 3 rows \(rows "
                                                                 r"3:6 of 10\), got \(4, 2\)"):
        dist.per_example(rng.standard_normal, (4, 2))
    assert dist.per_example(rng.standard_normal, (4, 2)).shape == (4, 2)


def test_collectives_are_identities_in_one_process():
    model = nn.Linear(3, 2, rng=0)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = Tensor(np.full(p.shape, 2.0, p.dtype))
    dist.broadcast_parameters(model)
    assert dist.average_gradients(model.parameters(), 5) == 5
    assert all(np.all(p.grad.numpy() == 2.0) for p in model.parameters())
    assert dist.allreduce_scalar(1.25, 3) == 1.25
    dist.check_in_sync(model, 1)
    assert all(np.array_equal(before[n], p.numpy()) for n, p in model.named_parameters())


def test_argument_errors_name_the_call():
    with pytest.raises(ValueError, match="set_timeout: seconds must be a positive finite "
                                         "number, got -1"):
        dist.set_timeout(-1)
    with pytest.raises(ValueError, match="average_gradients: count must be an int >= 0, "
                                         "got 1.5"):
        dist.average_gradients([], 1.5)
    with pytest.raises(ValueError, match="allreduce_scalar: weight must be a finite number "
                                         ">= 0, got -2"):
        dist.allreduce_scalar(1.0, -2)


def test_one_process_train_imports_no_mpi():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    code = ("import sys, io, numpy as np; from minigen.train import train; "
            "from tests.train.mpi_scripts.train_models import Regression; "
            "out = io.StringIO(); train(Regression(0), (np.ones((8, 3)), np.ones((8, 2))), "
            "steps=2, batch_size=4, log_every=1, out=out); "
            "print('mpi4py' in sys.modules, 'ranks' in out.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
