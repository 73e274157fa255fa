"""Weight initialisers. Each fills a Parameter in place from ``rng`` (default: the generator
seeded by ``minigen.manual_seed``) and returns it."""
import math

from .. import backend
from ..autograd import no_grad


def _fans(p):
    if p.ndim < 2:
        raise ValueError(f"init: fan in/out need a weight with >= 2 dims, got shape {p.shape}")
    receptive = int(math.prod(p.shape[2:]))
    return p.shape[1] * receptive, p.shape[0] * receptive


def _fill(p, sample):
    with no_grad():
        p.data[...] = sample.astype(p.dtype, copy=False)
        p._version += 1
    return p


def _uniform(p, low, high, rng, where):
    """U(low, high) into p; ``where`` is the public initialiser named by a bad rng."""
    return _fill(p, backend.as_rng(rng, p.device, where=where).uniform(low, high, p.shape))


def _normal(p, mean, std, rng, where):
    rng = backend.as_rng(rng, p.device, where=where)
    return _fill(p, mean + std * rng.standard_normal(p.shape))


def uniform_(p, low=0.0, high=1.0, rng=None):
    return _uniform(p, low, high, rng, "nn.init.uniform_")


def normal_(p, mean=0.0, std=1.0, rng=None):
    return _normal(p, mean, std, rng, "nn.init.normal_")


def zeros_(p):
    return _fill(p, p.data * 0)


def ones_(p):
    return _fill(p, p.data * 0 + 1)


def xavier_uniform_(p, gain=1.0, rng=None):
    """U(-a, a), a = gain sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = _fans(p)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(p, -a, a, rng, "nn.init.xavier_uniform_")


def xavier_normal_(p, gain=1.0, rng=None):
    fan_in, fan_out = _fans(p)
    return _normal(p, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng,
                   "nn.init.xavier_normal_")


def kaiming_uniform_(p, a=0.0, rng=None):
    """U(-b, b), b = sqrt(6 / ((1 + a^2) fan_in)) (He et al. 2015); a=sqrt(5) gives PyTorch's
    default for Linear and Conv, b = 1 / sqrt(fan_in)."""
    fan_in, _ = _fans(p)
    b = math.sqrt(6.0 / ((1 + a * a) * fan_in))
    return _uniform(p, -b, b, rng, "nn.init.kaiming_uniform_")


def kaiming_normal_(p, a=0.0, rng=None):
    fan_in, _ = _fans(p)
    return _normal(p, 0.0, math.sqrt(2.0 / ((1 + a * a) * fan_in)), rng,
                   "nn.init.kaiming_normal_")
