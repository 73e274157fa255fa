"""GAN.conv (the demo's digits network) against the PyTorch twin that
benchmarks/models_gan_digits.py trains beside it: with the same weights, the networks give the
same outputs, and a few non-saturating training steps on the same batches and noise leave the
same weights (float64). This is what lets the benchmark call the two the same GAN."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from minigen import nn, tensor
from minigen.models import GAN

torch = pytest.importorskip("torch")

BENCHMARK = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks",
                         "models_gan_digits.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("models_gan_digits", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    # the benchmark puts benchmarks/ first on sys.path (for its _timing helper); restored,
    # so that benchmarks/models.py, kernels.py, ... cannot shadow a later test's imports
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


class Recording(nn.Module):
    """A generator that keeps every noise batch it is given, so PyTorch can be fed the same."""

    def __init__(self, net):
        super().__init__()
        self.net, self.z_dim, self.inputs = net, net.z_dim, []

    def forward(self, z):
        self.inputs.append(z.numpy().copy())
        return self.net(z)


def _twins(bench, rng=0):
    gan = GAN.conv(image_shape=(1, 8, 8), z_dim=bench.Z_DIM, channels=bench.CHANNELS, rng=rng)
    gan.double()
    G, D = bench.torch_networks()
    G.double(), D.double()
    for mine, theirs in ((gan.generator, G), (gan.discriminator, D)):
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in mine.state_dict().items()})
    return gan, G, D


def test_the_twin_networks_compute_the_same_functions(bench):
    gan, G, D = _twins(bench)
    rng = np.random.default_rng(1)
    z, x = rng.standard_normal((5, bench.Z_DIM)), rng.random((5, 64))
    with torch.no_grad():
        theirs_g, theirs_d = G(torch.from_numpy(z)).numpy(), D(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(gan.generator(tensor(z)).numpy(), theirs_g, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(gan.discriminator(tensor(x)).numpy(), theirs_d, rtol=1e-12,
                               atol=1e-12)


def test_training_steps_leave_the_same_weights(bench):
    """Three steps (a discriminator and a generator update each) at lr 1e-3 with the
    benchmark's betas; float64 on both sides, so the weights agree to rounding."""
    gan, G, D = _twins(bench)
    recorded = Recording(gan.generator)
    gan = GAN(recorded, gan.discriminator, betas=bench.BETAS, rng=0)
    gan.double()
    start_g, start_d = recorded.net.state_dict(), gan.discriminator.state_dict()
    lr = 1e-3
    mine = gan.configure_optimizers(lr)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=bench.BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=bench.BETAS)
    data = np.random.default_rng(2).random((3, 16, 64))
    for step, batch in enumerate(data, start=1):
        gan.train_step(batch, step, mine)
        z_d, z_g = (torch.from_numpy(z) for z in recorded.inputs[-2:])
        bench.torch_step(G, D, opt_g, opt_d, torch.from_numpy(batch), z_d, z_g)
    assert len(recorded.inputs) == 2 * len(data)
    for net, twin, before in ((recorded.net, G, start_g), (gan.discriminator, D, start_d)):
        theirs = twin.state_dict()
        for name, value in net.state_dict().items():
            # Adam moves every weight by about lr per step, so a wrong loss, slope or update
            # order shows at ~1e-3; float64 rounding stays below 1e-12
            np.testing.assert_allclose(value, theirs[name].numpy(), rtol=0, atol=1e-10,
                                       err_msg=name)
            assert np.abs(value - before[name]).max() > lr, name
