"""Which Numba threading layer the kernels run under, and when their launches take turns.

Each case runs in a fresh process: the layer is fixed when Numba's thread pool starts."""
import os
import subprocess
import sys

import pytest

RUN = ("import sys, threading\n"
       "import numpy as np\n"
       "import numba\n"
       "{setup}\n"
       "from minigen.kernels import _dispatch, kde\n"
       "rng = np.random.default_rng(0)\n"
       "q, x = rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2))\n"
       "want = kde.log_kernel_sum(q, x, impl='numba')\n"
       "out = {{}}\n"
       "def work(k):\n"
       "    out[k] = [kde.log_kernel_sum(q, x, impl='numba') for _ in range(5)]\n"
       "threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]\n"
       "[t.start() for t in threads]\n"
       "[t.join() for t in threads]\n"
       "same = all(np.array_equal(a, want) for runs in out.values() for a in runs)\n"
       "print(numba.threading_layer(), _dispatch._state['serialise'], len(out) == 3 and same)\n")


def run(tmp_path, layer_env=None, setup=""):
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    if layer_env is not None:
        env["NUMBA_THREADING_LAYER"] = layer_env
    done = subprocess.run([sys.executable, "-c", RUN.format(setup=setup)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    layer, serialise, ok = done.stdout.split()
    assert ok == "True"                     # every thread got the single-thread answer
    return layer, serialise == "True"


def test_workqueue_by_default_and_launches_take_turns(tmp_path):
    assert run(tmp_path) == ("workqueue", True)


def test_a_layer_set_in_code_is_kept_and_its_launches_run_at_once(tmp_path):
    """numba.config.THREADING_LAYER set before the first kernel is the user's choice too."""
    assert run(tmp_path, setup="numba.config.THREADING_LAYER = 'omp'") == ("omp", False)


@pytest.mark.parametrize("value", ["omp", "threadsafe", "default"])
def test_a_thread_safe_layer_from_the_environment_runs_launches_at_once(tmp_path, value):
    """'threadsafe' and 'default' let Numba pick (tbb, else omp here): the launches take
    turns only when the layer that started is 'workqueue'."""
    layer, serialise = run(tmp_path, value)
    assert layer in ("tbb", "omp")
    assert serialise is False


def test_workqueue_from_the_environment_keeps_launches_in_turn(tmp_path):
    assert run(tmp_path, "workqueue") == ("workqueue", True)
