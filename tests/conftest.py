"""Shared test configuration: the hypothesis profiles.

"ci" (the default) keeps property tests bounded and reproducible: at most 25 examples per
test, no per-example deadline (Numba compiles on first call), derandomized (the same examples
on every run) and no "too slow" health check. "dev" explores more: select it with
HYPOTHESIS_PROFILE=dev. A test's own ``@settings(max_examples=...)`` still overrides the
profile's value.
"""
import os

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
