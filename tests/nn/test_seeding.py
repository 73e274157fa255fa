"""An int seed given to a module with several parts seeds them as one generator: parts of one
shape start different, the same seed rebuilds the same module, and a dropout's masks change
from call to call."""
import numpy as np
import pytest

import minigen as mg
from minigen import nn
from minigen.models.diffusion.denoisers import TimeMLP, TinyUNet
from minigen.models.lm.gpt import Block, CausalSelfAttention
from minigen.models.networks import ConvDecoder, ConvEncoder

BUILDERS = {
    "MLP": lambda rng: nn.MLP([4, 8, 8, 8], rng=rng),
    "MultiheadAttention": lambda rng: nn.MultiheadAttention(8, 2, rng=rng),
    "CausalSelfAttention": lambda rng: CausalSelfAttention(8, 2, rng=rng),
    "Block": lambda rng: Block(8, 2, rng=rng),
    "ConvEncoder": lambda rng: ConvEncoder(4, (1, 8, 8), channels=(4, 4), rng=rng),
    "ConvDecoder": lambda rng: ConvDecoder(4, (4, 8, 8), channels=(4, 4), rng=rng),
    "TimeMLP": lambda rng: TimeMLP(2, hidden=8, depth=3, rng=rng),
    "TinyUNet": lambda rng: TinyUNet(1, channels=4, groups=2, rng=rng),
}


def weights(module):
    """The drawn weights (a zero-initialised layer, TinyUNet's last, draws nothing)."""
    return [p.data for name, p in module.named_parameters() if p.ndim > 1 and p.data.any()]


def drawn_alike(a, b):
    """True when a and b begin with the same random draws up to a scale (one seed each: the
    same stream, scaled by each layer's fan-in)."""
    n = min(a.size, b.size)
    a, b = a.reshape(-1)[:n], b.reshape(-1)[:n]
    return np.allclose(a * b[0], b * a[0], rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_parts_start_from_different_draws_and_the_seed_repeats(name):
    module = BUILDERS[name](0)
    ws = weights(module)
    assert len(ws) >= 2
    assert not any(drawn_alike(a, b) for i, a in enumerate(ws) for b in ws[i + 1:])
    again = weights(BUILDERS[name](0))
    assert all(np.array_equal(a, b) for a, b in zip(ws, again))
    other = weights(BUILDERS[name](1))
    assert not all(np.array_equal(a, b) for a, b in zip(ws, other))


def test_a_seeded_dropout_draws_a_new_mask_each_call_and_repeats_from_its_seed():
    x = mg.ones((16, 32))
    first, second = nn.Dropout(0.5, rng=3), nn.Dropout(0.5, rng=3)
    masks = [first(x).data != 0 for _ in range(3)]
    assert not np.array_equal(masks[0], masks[1])
    assert all(np.array_equal(m, second(x).data != 0) for m in masks)


def test_a_generator_is_shared_as_given_and_none_stays_the_default():
    rng = np.random.default_rng(5)
    assert nn.Dropout(0.1, rng=rng).rng is rng
    assert nn.Dropout(0.1).rng is None
