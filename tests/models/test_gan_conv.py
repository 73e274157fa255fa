"""GAN.conv and GAN.for_data on images: the DCGAN-style networks (LeakyReLU discriminator,
ReLU generator), their channels, and errors that name the call."""
import numpy as np
import pytest

from minigen import nn
from minigen.models import GAN


def _activations(module):
    return [type(m).__name__ for m in module.modules() if isinstance(m, (nn.ReLU,
                                                                         nn.LeakyReLU))]


def test_conv_discriminator_uses_leaky_relu_and_generator_relu():
    gan = GAN.for_data(np.zeros((4, 64)), image_shape=(1, 8, 8), z_dim=4, rng=0)
    assert set(_activations(gan.discriminator)) == {"LeakyReLU"}
    assert set(_activations(gan.generator)) == {"ReLU"}


def test_conv_channels_set_both_networks_and_their_output_shapes():
    gan = GAN.conv((1, 8, 8), z_dim=4, channels=(8, 12), rng=0)
    assert gan.generator.channels == (8, 12) and gan.discriminator.channels == (8, 12)
    gan.fit(np.random.default_rng(0).random((16, 64)), steps=2, batch_size=8, rng=0)
    assert gan.sample(5, rng=0).shape == (5, 64)


@pytest.mark.parametrize("channels, message", [
    ((), "GAN.conv: channels must be"),
    ((8, 8, 8, 8), "GAN.conv"),                  # four halvings of 8 pixels
    ("16", "GAN.conv: channels must be"),
])
def test_conv_rejects_bad_channels_naming_the_call(channels, message):
    with pytest.raises(ValueError, match=message):
        GAN.conv((1, 8, 8), channels=channels)
