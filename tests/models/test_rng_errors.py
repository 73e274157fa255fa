"""A bad rng / random_state is reported by the call the user made, not by the helper inside."""
import numpy as np
import pytest

from minigen import nn
from minigen.density import GaussianMixture
from minigen.models import GAN, VAE
from minigen.train import train


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 1)

    def loss(self, batch):
        return (self.w(batch) ** 2).mean()


@pytest.mark.parametrize("call, match", [
    (lambda: VAE(4, 2, rng=-1), r"^VAE: rng must be an int >= 0, got -1"),
    (lambda: VAE(4, 2, rng="x"), r"^VAE: rng must be None, an int seed"),
    (lambda: GAN.mlp(2, rng=-1), r"^GAN.mlp: rng must be an int >= 0"),
    (lambda: GaussianMixture(random_state=-1).fit(np.random.default_rng(0).random((20, 2))),
     r"^GaussianMixture.fit: random_state must be an int >= 0"),
    (lambda: train(_Tiny(), np.ones((8, 2)), steps=1, batch_size=4, rng=-2, verbose=False),
     r"^train: rng must be an int >= 0"),
])
def test_the_error_names_the_users_call(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()
