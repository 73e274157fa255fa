"""kernels._dispatch (path selection, info, NumPy-only import) and kernels._math (exp, max)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minigen.kernels as K
from minigen.kernels import _dispatch, _math, softmax

KERNELS = {"log_kernel_sum", "log_kernel_sum_grad", "conv2d", "conv2d_input_grad",
           "conv2d_weight_grad", "softmax", "log_softmax", "softmax_backward",
           "log_softmax_backward", "masked_softmax", "cross_entropy", "cross_entropy_backward",
           "q_sample",
           "ddpm_step", "ddim_step", "layer_norm",
           "layer_norm_backward", "group_norm", "group_norm_backward", "group_norm_act",
           "group_norm_act_backward", "sgd_step", "adam_step", "index_add_rows"}
KERNELS |= {f"{name}[{kind}]" for name in ("bias_act", "bias_act_backward")
            for kind in ("relu", "silu", "gelu", "gelu_tanh")}


def test_info_reports_every_kernel(monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    report = K.info()
    assert set(report) == KERNELS
    for entry in report.values():
        assert entry["numpy"] in ("numba", "reference")
        assert entry["cupy"] in ("cuda", "reference")
        assert isinstance(entry["reason"], str) and entry["threshold"] >= 0
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")
    assert all(e["numpy"] == e["cupy"] == "reference" for e in K.info().values())


def test_choose_by_size_env_and_explicit_impl(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    small, big = np.zeros((2, 3)), np.zeros((512, 512))
    assert _dispatch.choose("softmax", small, small.size) == "reference"
    assert _dispatch.choose("softmax", big, big.size) == "numba"
    assert _dispatch.choose("softmax", big, big.size, impl="reference") == "reference"
    monkeypatch.setenv("MINIGEN_KERNELS", "numba")
    assert _dispatch.choose("softmax", small, small.size) == "numba"
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")
    assert _dispatch.choose("softmax", big, big.size) == "reference"
    np.testing.assert_allclose(softmax.softmax(big), 1 / 512)
    monkeypatch.setenv("MINIGEN_KERNELS", "fast")
    with pytest.raises(ValueError, match="MINIGEN_KERNELS"):
        _dispatch.choose("softmax", big, big.size)
    with pytest.raises(ValueError, match="softmax: impl must be one of"):
        softmax.softmax(big, impl="gpu")


@pytest.mark.parametrize("value, path", [("reference", "reference"), (" Numba ", "numba"),
                                         ("", None), (None, None)])
def test_requested_path_reads_minigen_kernels(monkeypatch, value, path):
    if value is None:
        monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("MINIGEN_KERNELS", value)
    assert K.requested_path() == path


def test_requested_path_refuses_an_unknown_value(monkeypatch):
    monkeypatch.setenv("MINIGEN_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"^MINIGEN_KERNELS must be 'reference', 'numba' or "
                                         r"unset, got 'cuda'$"):
        K.requested_path()


def test_numpy_alone_is_enough():
    code = ("import sys\n"
            "import minigen.kernels as K\n"
            "assert not any(m.split('.')[0] == 'numba' for m in sys.modules), 'numba imported'\n"
            "for name in ('numba', 'numba.cuda', 'scipy', 'torch', 'cupy'):\n"
            "    sys.modules[name] = None\n"
            "import numpy as np\n"
            "from minigen.kernels import kde, softmax\n"
            "x = np.random.default_rng(0).normal(size=(300, 300))\n"
            "assert abs(softmax.softmax(x).sum() - 300) < 1e-9\n"
            "assert kde.log_kernel_sum(x[:, :2], x[:, :2], 0.5).shape == (300,)\n"
            "assert all(v['numpy'] == 'reference' for v in K.info().values())\n"
            "try:\n"
            "    softmax.softmax(x, impl='numba')\n"
            "except RuntimeError as e:\n"
            "    assert 'needs Numba' in str(e)\n"
            "else:\n"
            "    raise AssertionError('impl=numba without Numba did not raise')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def compiled_exp():
    """The polynomial exp and fmax of kernels/_math.py, compiled with the kernels' flags:
    ``apply(x)`` maps exp over a 1-D array, ``largest(x)`` is fmax reduced over it."""
    numba = pytest.importorskip("numba")
    _dispatch.materialize(vars(_math), "cpu")
    exp, fmax = _math.exp_cpu, _math.fmax

    @numba.njit(fastmath=_dispatch.FASTMATH)
    def fill(x, out):
        for i in range(x.shape[0]):
            out[i] = exp(x[i])

    @numba.njit(fastmath=_dispatch.FASTMATH)
    def largest(x):
        m = -np.inf
        for i in range(x.shape[0]):
            m = fmax(m, x[i])
        return m

    def apply(x):
        out = np.empty_like(x)
        fill(x, out)
        return out

    return apply, largest


def _max_relative_error(got, x):
    exact = np.exp(x.astype(np.float64))
    return (np.abs(got - exact) / exact).max()


def test_polynomial_exp_is_within_4_ulp_on_the_kernels_range(compiled_exp):
    apply, _ = compiled_exp
    x = np.concatenate([np.linspace(-708, 0, 1_000_003), -np.logspace(-12, 2.85, 10_001),
                        [0.0, -1e-300, -0.5 * np.log(2), -707.99]])
    assert _max_relative_error(apply(x), x) < 4 * np.finfo(float).eps


def test_polynomial_exp_float32_overload_is_within_4_ulp(compiled_exp):
    apply, _ = compiled_exp
    x32 = np.linspace(-87, 0, 1_000_003).astype(np.float32)
    out32 = apply(x32)
    assert out32.dtype == np.float32
    assert _max_relative_error(out32, x32) < 4 * np.finfo(np.float32).eps


def test_polynomial_exp_is_within_4_ulp_for_positive_x_up_to_overflow(compiled_exp):
    apply, _ = compiled_exp
    pos = np.concatenate([np.linspace(0, 709.78, 100_003), [709.0, 709.5, 709.78]])
    assert _max_relative_error(apply(pos), pos) < 4 * np.finfo(float).eps


def test_polynomial_exp_underflows_to_zero(compiled_exp):
    apply, _ = compiled_exp
    assert np.all(apply(np.array([-np.inf, -709.0, -1e6])) == 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_polynomial_exp_keeps_nan_and_overflows_to_inf(compiled_exp, dtype):
    apply, _ = compiled_exp
    got = apply(np.array([np.nan, np.inf, 1e4, -np.nan], dtype))
    assert np.isnan(got[[0, 3]]).all() and np.isposinf(got[[1, 2]]).all()


def test_fmax_reduction_ignores_minus_inf_and_keeps_an_all_minus_inf_row(compiled_exp):
    _, largest = compiled_exp
    assert largest(np.linspace(-708, 0, 1001)) == 0.0
    assert largest(np.array([-np.inf, -3.0, -np.inf])) == -3.0
    assert largest(np.full(7, -np.inf)) == -np.inf


def test_numba_cache_is_reused_by_a_fresh_process(tmp_path):
    """cache=True: a second process loads the compiled KDE kernel instead of compiling it;
    a process whose kernel sources hash differently (an edited helper) recompiles."""
    pytest.importorskip("numba")
    code = ("import sys\n"
            "import numpy as np\n"
            "from minigen.kernels import _dispatch, kde\n"
            "if sys.argv[1:]:\n"
            "    _dispatch.source_hash = lambda: sys.argv[1]\n"
            "x = np.ones((3, 2))\n"
            "kde.log_kernel_sum(x, x, impl='numba')\n"
            "stats = kde._numba_core.stats\n"
            "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code, *extra], env=env, capture_output=True,
                           text=True) for extra in ([], [], ["edited"], ["edited"])]
    for run in runs:
        assert run.returncode == 0, run.stderr
    counts = [tuple(map(int, r.stdout.split())) for r in runs]
    assert counts == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_source_hash_sees_every_kernel_file(tmp_path):
    """The cache key changes when any kernels/*.py file changes (e.g. an inlined helper)."""
    src = os.path.dirname(_dispatch.__file__)
    for name in os.listdir(src):
        if name.endswith(".py"):
            (tmp_path / name).write_bytes(open(os.path.join(src, name), "rb").read())
    before = _dispatch.source_hash(str(tmp_path))
    assert before == _dispatch.source_hash(src)
    with open(tmp_path / "_math.py", "a") as f:
        f.write("# edited\n")
    assert _dispatch.source_hash(str(tmp_path)) != before


def test_kernels_called_from_several_threads_at_once(tmp_path):
    """Threads that call a parallel Numba kernel at once, from its first (compiling) call on,
    all get the single-thread answer: under the workqueue layer a concurrent launch would abort
    the process, and a thread arriving during the compilation must wait for the compiled
    kernel, not call the placeholder that stands in for it meanwhile."""
    pytest.importorskip("numba")
    code = ("import threading\n"
            "import numpy as np\n"
            "from minigen.kernels import kde\n"
            "rng = np.random.default_rng(0)\n"
            "q, x = rng.standard_normal((3000, 2)), rng.standard_normal((3000, 2))\n"
            "out = {}\n"
            "def work(k):\n"
            "    out[k] = [kde.log_kernel_sum(q, x, impl='numba') for _ in range(15)]\n"
            "threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]\n"
            "[t.start() for t in threads]\n"
            "[t.join() for t in threads]\n"
            "want = kde.log_kernel_sum(q, x, impl='numba')\n"
            "print(sorted(out) == [0, 1, 2, 3] and all(np.array_equal(a, want)\n"
            "      for runs in out.values() for a in runs))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["True"], run.stderr[-2000:]


def _divide(a, b, out):
    for i in range(out.shape[0]):
        out[i] = a[i] / b[i]


def test_cpu_kernels_divide_with_numpys_error_model():
    """A float division by zero in a kernel gives NumPy's inf and NaN (Numba's default raises
    ZeroDivisionError, and the test it puts before each division keeps loops scalar), both in
    a ``lazy_njit`` kernel and in a per-element formula compiled by ``both``."""
    pytest.importorskip("numba")
    a, b = np.array([1.0, -2.0, 0.0, 6.0]), np.array([0.0, 0.0, 0.0, 3.0])
    want = np.array([np.inf, -np.inf, np.nan, 2.0])
    kernel = _dispatch.lazy_njit()(_divide).build()
    out = np.empty(4)
    kernel(a, b, out)
    np.testing.assert_array_equal(out, want)
    element = _dispatch.both(lambda x, y: x / y)[0].build()
    np.testing.assert_array_equal([element(x, y) for x, y in zip(a, b)], want)
