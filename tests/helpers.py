"""Helpers shared by several test files (imported as ``tests.helpers``; pytest's docs advise
against importing from conftest.py, which pytest loads under a name of its own)."""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigen as mg


def leaf(values, dtype=np.float64):
    """A float64 (by default) leaf tensor that requires grad, for gradient tests."""
    return mg.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# --- CUDA kernels under Numba's simulator ------------------------------------------------------
# Each kernel test file marks its simulator cases ``@sim`` (names starting ``test_sim_``) and
# runs them in a child process with NUMBA_ENABLE_CUDASIM=1, since the simulator must be chosen
# before numba.cuda is first imported.
UNDER_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim = pytest.mark.skipif(not UNDER_SIM, reason="runs in the simulator subprocess")


def run_simulator_cases(test_file):
    """Run ``test_file``'s ``test_sim_*`` cases under the CUDA simulator in a child process and
    fail with its output when any of them fails (skip inside the child, or without numba)."""
    if UNDER_SIM:
        pytest.skip("this is the simulator subprocess")
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", "sim_", test_file], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


# --- scripts under mpiexec -----------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def run_mpi(script, n, *args, timeout):
    """(return code, stdout + stderr, seconds) of ``python script args`` under ``mpiexec -n n``,
    importing this checkout's minigen."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    start = time.perf_counter()
    out = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(script), *map(str, args)],
                         env=env, capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr, time.perf_counter() - start


def load_script(path):
    """The module at ``path`` (an mpiexec script, imported to run its single-process side)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recording_model(record):
    """A Linear(3, 1) model whose ``loss`` appends ``record()`` to its ``seen`` list at each
    training step: what the training loop had set up while the step ran."""
    from minigen import nn

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)
            self.seen = []

        def loss(self, batch):
            self.seen.append(record())
            return ((self.net(batch) - 1.0) ** 2).mean()
    return Recorder()


def gaussian_eps(schedule, mu, sd):
    """The exact E[eps | x_t] of a DDPM for data N(mu, sd^2) (per coordinate)."""
    def eps_fn(x, t):
        ab = schedule.alpha_bars[t].reshape((-1,) + (1,) * (x.ndim - 1))
        return np.sqrt(1 - ab) * (x - np.sqrt(ab) * mu) / (ab * sd ** 2 + 1 - ab)
    return eps_fn


def spy_denoiser():
    """A denoiser that records the inputs it is given (``seen``) and predicts zero."""
    from minigen.nn import Module

    class Spy(Module):
        def __init__(self):
            super().__init__()
            self.seen = []
            self.w = mg.nn.Parameter(np.zeros(1, dtype=np.float32))

        def forward(self, x, t):
            self.seen.append(x.numpy().copy())
            return x * self.w
    return Spy()
