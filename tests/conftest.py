"""Shared test configuration: the hypothesis profiles, and minigen's default generator.

"ci" (the default) keeps property tests bounded and reproducible: at most 25 examples per
test, no per-example deadline (Numba compiles on first call), derandomized (the same examples
on every run) and no "too slow" health check. "dev" explores more: select it with
HYPOTHESIS_PROFILE=dev. A test's own ``@settings(max_examples=...)`` still overrides the
profile's value.

Every test starts with minigen's default generator (the one ``rng=None`` draws from) seeded
with 0, and the generator is put back as it was afterwards, so no result depends on which
tests ran before (a test that calls ``manual_seed`` changes it for itself only). Run the suite
shuffled with ``pytest -p randomly`` (pytest-randomly) to check.
"""
import os

import pytest

from minigen import backend
from minigen.kernels import _dispatch

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; tests that need it import it themselves
    settings = None

if settings is not None:
    settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.register_profile("dev", max_examples=200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # kernels/_dispatch.py filters Numba's note about minigen's inlined helpers at import, but
    # pytest restores its own filters after collection and after each test: give it the same one
    config.addinivalue_line("filterwarnings", f"ignore:{_dispatch.INLINED_HELPER_NOTE}")


@pytest.fixture(autouse=True)
def minigen_default_generator():
    saved = dict(backend._rngs)
    cpu_state = saved["cpu"].bit_generator.state if "cpu" in saved else None
    backend.manual_seed(0)
    yield
    backend._rngs.clear()
    backend._rngs.update(saved)
    if cpu_state is not None:
        saved["cpu"].bit_generator.state = cpu_state
