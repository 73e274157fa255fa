"""The EMA of parameters: NumPy-scalar decays, and the weight swap under threads."""
import threading
import time

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim


def test_ema_takes_a_numpy_float_decay():
    net = nn.Linear(2, 2, rng=0).double()
    ema = optim.EMA(net, np.float32(0.5))
    assert ema.decay == 0.5 and type(ema.decay) is float
    before = ema.shadow["weight"].copy()
    with mg.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)
    np.testing.assert_array_equal(ema.shadow["weight"], 0.5 * before + 0.5)
    with pytest.raises(ValueError, match=r"EMA: decay must be a finite number in \[0, 1\), "
                                         r"got np.float32\(1.0\)"):
        optim.EMA(net, np.float32(1.0))


def test_two_threads_in_applied_never_leave_the_averages_in_place():
    """Each thread holds the averaged weights for a while; without one swap at a time, the
    second thread saves the averages as "the trained weights" and restores them last."""
    net = nn.Linear(3, 3, rng=0).double()
    ema = optim.EMA(net, decay=0.5)
    with mg.no_grad():
        net.weight.fill_(2.0)
    ema.update(net)
    trained = {k: v.copy() for k, v in net.state_dict().items()}
    seen_inside, errors = [], []

    def sample():
        try:
            with ema.applied(net):
                time.sleep(0.05)            # the other thread enters meanwhile
                seen_inside.append(np.array_equal(net.weight.numpy(), ema.shadow["weight"]))
        except BaseException as err:     # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=sample) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen_inside == [True, True]
    for k, v in trained.items():
        np.testing.assert_array_equal(net.state_dict()[k], v)


def test_applied_nests_in_one_thread():
    net = nn.Linear(2, 2, rng=0).double()
    ema = optim.EMA(net, decay=0.5)
    with mg.no_grad():
        net.weight.fill_(1.0)
    trained = net.weight.numpy().copy()
    ema.update(net)
    with ema.applied(net):
        with ema.applied(net):
            np.testing.assert_array_equal(net.weight.numpy(), ema.shadow["weight"])
        np.testing.assert_array_equal(net.weight.numpy(), ema.shadow["weight"])
    np.testing.assert_array_equal(net.weight.numpy(), trained)
