"""minigen._alloc.keep_freed_memory: freed memory stays for the next step, then goes back."""
import subprocess
import sys

import numpy as np
import pytest

from minigen import _alloc
from tests.helpers import recording_model


MEASURE = """
import resource
import numpy as np
from minigen import _alloc

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def step():   # what a small training step allocates, touches and frees: 40 MB + 64 MB
    arrays = [np.ones((512, 1024), np.float32) for _ in range(20)]
    big = np.ones((4096, 4096), np.float32)
    del arrays, big

step()
before = faults()
step()
outside = faults() - before
with _alloc.keep_freed_memory():
    step()                          # the first step inside grows the heap once
    before = faults()
    step()
    inside = faults() - before
print(outside, inside)
"""

needs_glibc = pytest.mark.skipif(_alloc._libc() is None, reason="needs glibc's malloc")


@needs_glibc
def test_a_repeated_step_takes_no_page_faults_inside_the_block():
    """In a fresh process (the heap of a long test run is no baseline): each step touches
    104 MB = 26,600 pages; glibc's defaults fault most of them in again at every step."""
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    outside, inside = map(int, done.stdout.split())
    assert outside > 10_000
    assert inside < 100


@needs_glibc
def test_blocks_nest_and_the_defaults_return_after_the_outermost(monkeypatch):
    calls = []
    libc = _alloc._libc()

    class Recording:
        def mallopt(self, param, value):
            calls.append((param, value))
            return libc.mallopt(param, value)

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return libc.malloc_trim(pad)
    monkeypatch.setitem(_alloc._state, "libc", Recording())
    with _alloc.keep_freed_memory():
        with _alloc.keep_freed_memory():
            pass
        assert calls == list(_alloc.KEEP.items())       # the inner exit restored nothing
    assert calls == list(_alloc.KEEP.items()) + list(_alloc.DEFAULTS.items()) + [("trim", 0)]


def test_the_defaults_return_when_the_block_raises(monkeypatch):
    calls = []

    class Fake:
        def mallopt(self, param, value):
            calls.append(value)
            return 1

        def malloc_trim(self, pad):
            calls.append("trim")
    monkeypatch.setitem(_alloc._state, "libc", Fake())
    with pytest.raises(KeyError):
        with _alloc.keep_freed_memory():
            raise KeyError("inside")
    assert calls[-3:] == list(_alloc.DEFAULTS.values()) + ["trim"]
    assert _alloc._state["depth"] == 0


def test_without_glibc_the_block_runs_as_is(monkeypatch):
    monkeypatch.setitem(_alloc._state, "libc", None)
    ran = []
    with _alloc.keep_freed_memory():
        ran.append(True)
    assert ran == [True]


def test_train_keeps_freed_memory_during_the_run():
    from minigen.train import train
    before = _alloc._state["depth"]
    model = recording_model(lambda: _alloc._state["depth"])
    train(model, np.ones((8, 3), np.float32), steps=2, batch_size=4, verbose=False)
    assert model.seen == [before + 1] * 2 and _alloc._state["depth"] == before
