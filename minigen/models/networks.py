"""Shared encoders and decoders: the networks of the auto-encoder family and of the GAN.

Every network takes and returns flat Tensors, (n, features), so a likelihood or a loss never
needs to know which kind produced its input; the conv networks reshape to (n, C, H, W) inside.

    MLPEncoder(x_dim, out_dim, hidden):  x -> act(W_1 x + b_1) -> ... -> W_out h + b_out
    MLPDecoder(z_dim, x_dim, hidden):    the same stack from z to x (``hidden`` from z's side)
    ConvEncoder(out_dim, image_shape, channels):  for each c in channels a 3x3 convolution
        with stride 2 and padding 1 (H -> H/2) and the activation; flatten; Linear to out_dim
    ConvDecoder(z_dim, image_shape, channels):    Linear from z to (channels[-1], H/2^k, W/2^k)
        and the activation, then 4x4 transposed convolutions with stride 2 and padding 1
        (H -> 2H) through reversed(channels) down to the image's C channels (no activation
        after the last, so the output is a logit or a mean)

The outputs are linear: the models put the likelihood (Bernoulli logits, Gaussian means) or
the code split (mean, log-variance) on top. The layout follows the DCGAN pattern (Radford et
al. 2016: strided convolutions down, strided transposed convolutions up, no pooling).
"""
import math

from .. import _checks
from ..backend import check_rng, shared_rng
from ..distribution import Configurable, register
from ..nn import MLP, Conv2d, ConvTranspose2d, Linear, Module, Sequential, activation as make_act


def check_activation(activation, where):
    """``activation`` if it names one of ``minigen.nn.activation``'s activations."""
    if not isinstance(activation, str):
        raise ValueError(f"{where}: activation must be the name of an activation (e.g. 'relu'), "
                         f"got {_checks.excerpt(activation)}")
    make_act(activation, where)          # an unknown name fails here, naming ``where``
    return activation


def check_image_shape(image_shape, depth, where):
    """``image_shape`` as a (channels, height, width) tuple of positive ints whose height and
    width are multiples of 2^depth (``depth`` stride-2 stages halve them)."""
    shape = _checks.int_tuple(image_shape, "image_shape", where, length=3)
    step = 2 ** depth
    if shape[1] % step or shape[2] % step:
        raise ValueError(f"{where}: image_shape's height and width must be multiples of "
                         f"2^len(channels) = {step}, got image_shape={shape}")
    return shape


def check_architecture(where, x_dim, hidden, activation, image_shape, channels):
    """The network arguments every model of this family shares, checked under the model's
    name before anything is built: x_dim a positive int, hidden a tuple of positive ints (may
    be empty), a known activation, channels a non-empty tuple of positive ints and, when
    given, an image_shape with C*H*W = x_dim. Returns (x_dim, hidden, image_shape, channels)
    as plain ints and tuples."""
    x_dim = _checks.positive_int(x_dim, "x_dim", where)
    hidden = _checks.int_tuple(hidden, "hidden", where)
    check_activation(activation, where)
    channels = _checks.int_tuple(channels, "channels", where, nonempty=True)
    if image_shape is not None:
        image_shape = check_image_shape(image_shape, len(channels), where)
        _check_flat_size(where, x_dim, image_shape)
    return x_dim, hidden, image_shape, channels


def _check_input(where, x, features):
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{where}: input must have shape (n, {features}), got {x.shape}")


@register()
class MLPEncoder(Module, Configurable):
    """x (n, x_dim) -> (n, out_dim) through ``hidden`` layers with ``activation``."""

    def __init__(self, x_dim, out_dim, hidden=(256, 256), activation="relu", rng=None):
        super().__init__()
        _checks.positive_int(x_dim, "x_dim", "MLPEncoder")
        _checks.positive_int(out_dim, "out_dim", "MLPEncoder")
        self.x_dim, self.out_dim, self.activation, self.rng = x_dim, out_dim, activation, rng
        self.hidden = _checks.int_tuple(hidden, "hidden", "MLPEncoder")
        check_activation(activation, "MLPEncoder")
        check_rng(rng, "rng", "MLPEncoder")
        self.net = MLP((x_dim,) + self.hidden + (out_dim,), activation, rng=rng)

    def forward(self, x):
        _check_input("MLPEncoder", x, self.x_dim)
        return self.net(x)


@register()
class MLPDecoder(Module, Configurable):
    """z (n, z_dim) -> (n, x_dim) through ``hidden`` layers (listed from z's side)."""

    def __init__(self, z_dim, x_dim, hidden=(256, 256), activation="relu", rng=None):
        super().__init__()
        _checks.positive_int(z_dim, "z_dim", "MLPDecoder")
        _checks.positive_int(x_dim, "x_dim", "MLPDecoder")
        self.z_dim, self.x_dim, self.activation, self.rng = z_dim, x_dim, activation, rng
        self.hidden = _checks.int_tuple(hidden, "hidden", "MLPDecoder")
        check_activation(activation, "MLPDecoder")
        check_rng(rng, "rng", "MLPDecoder")
        self.net = MLP((z_dim,) + self.hidden + (x_dim,), activation, rng=rng)

    def forward(self, z):
        _check_input("MLPDecoder", z, self.z_dim)
        return self.net(z)


@register()
class ConvEncoder(Module, Configurable):
    """Flat images (n, C*H*W) -> (n, out_dim): stride-2 3x3 convolutions, then a Linear."""

    def __init__(self, out_dim, image_shape=(1, 8, 8), channels=(16, 32), activation="relu",
                 rng=None):
        super().__init__()
        _checks.positive_int(out_dim, "out_dim", "ConvEncoder")
        self.channels = _checks.int_tuple(channels, "channels", "ConvEncoder", nonempty=True)
        self.image_shape = check_image_shape(image_shape, len(self.channels), "ConvEncoder")
        check_activation(activation, "ConvEncoder")
        self.out_dim, self.activation, self.rng = out_dim, activation, rng
        rng = shared_rng(rng, "ConvEncoder")
        c, h, w = self.image_shape
        layers = []
        for c_out in self.channels:
            layers += [Conv2d(c, c_out, 3, stride=2, padding=1, rng=rng),
                       make_act(activation, "ConvEncoder")]
            c, h, w = c_out, h // 2, w // 2
        self.convs = Sequential(*layers)
        self.out = Linear(c * h * w, out_dim, rng=rng)

    def forward(self, x):
        _check_input("ConvEncoder", x, math.prod(self.image_shape))
        h = self.convs(x.reshape((len(x),) + self.image_shape))
        return self.out(h.reshape(len(x), -1))


@register()
class ConvDecoder(Module, Configurable):
    """z (n, z_dim) -> flat images (n, C*H*W): a Linear to a (channels[-1], H/2^k, W/2^k) map,
    then stride-2 4x4 transposed convolutions back to (C, H, W)."""

    def __init__(self, z_dim, image_shape=(1, 8, 8), channels=(16, 32), activation="relu",
                 rng=None):
        super().__init__()
        _checks.positive_int(z_dim, "z_dim", "ConvDecoder")
        self.channels = _checks.int_tuple(channels, "channels", "ConvDecoder", nonempty=True)
        self.image_shape = check_image_shape(image_shape, len(self.channels), "ConvDecoder")
        check_activation(activation, "ConvDecoder")
        self.z_dim, self.activation, self.rng = z_dim, activation, rng
        rng = shared_rng(rng, "ConvDecoder")
        c_img, h, w = self.image_shape
        k = len(self.channels)
        self.start = (self.channels[-1], h >> k, w >> k)
        self.inp = Sequential(Linear(z_dim, math.prod(self.start), rng=rng),
                              make_act(activation, "ConvDecoder"))
        ups = list(reversed(self.channels)) + [c_img]
        layers = []
        for i, (a, b) in enumerate(zip(ups[:-1], ups[1:])):
            layers.append(ConvTranspose2d(a, b, 4, stride=2, padding=1, rng=rng))
            if i < k - 1:
                layers.append(make_act(activation, "ConvDecoder"))
        self.deconvs = Sequential(*layers)

    def forward(self, z):
        _check_input("ConvDecoder", z, self.z_dim)
        h = self.inp(z).reshape((len(z),) + self.start)
        return self.deconvs(h).reshape(len(z), -1)


def make_encoder(x_dim, out_dim, hidden=(256, 256), activation="relu", image_shape=None,
                 channels=(16, 32), rng=None, where="make_encoder"):
    """An ``MLPEncoder`` for flat data, or a ``ConvEncoder`` when ``image_shape`` is given
    (then ``x_dim`` must equal C*H*W); the arguments are checked under the name ``where``."""
    x_dim, hidden, image_shape, channels = check_architecture(where, x_dim, hidden, activation,
                                                              image_shape, channels)
    if image_shape is None:
        return MLPEncoder(x_dim, out_dim, hidden, activation, rng)
    return ConvEncoder(out_dim, image_shape, channels, activation, rng)


def make_decoder(z_dim, x_dim, hidden=(256, 256), activation="relu", image_shape=None,
                 channels=(16, 32), rng=None, where="make_decoder"):
    """An ``MLPDecoder`` (``hidden`` given from the data's side, as for the encoder, and
    reversed here), or a ``ConvDecoder`` when ``image_shape`` is given."""
    x_dim, hidden, image_shape, channels = check_architecture(where, x_dim, hidden, activation,
                                                              image_shape, channels)
    if image_shape is None:
        return MLPDecoder(z_dim, x_dim, hidden[::-1], activation, rng)
    return ConvDecoder(z_dim, image_shape, channels, activation, rng)


def _check_flat_size(where, x_dim, image_shape):
    if x_dim != math.prod(image_shape):
        raise ValueError(f"{where}: x_dim={x_dim} but image_shape={tuple(image_shape)} has "
                         f"{math.prod(image_shape)} values")
