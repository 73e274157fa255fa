"""Module: named trees of parameters, state dicts, train/eval, devices, flat parameter
buffers. ``Parameter`` lives in ``nn.flat`` (beside the buffer it can live in) and is
re-exported here."""
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from .flat import Parameter, flatten

__all__ = ["Module", "ModuleList", "Parameter", "Sequential"]


class Module:
    """Base class: attributes that are Parameters, Modules or buffers form the tree."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               "assigning attributes")
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Non-trainable state that is saved in the state dict (e.g. running means)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- the tree -----------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self):
        seen = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield prefix + name, p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                yield prefix + name, b

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # --- state --------------------------------------------------------------------------
    def state_dict(self):
        """Name -> NumPy array copy, for parameters and buffers."""
        state = OrderedDict((n, p.numpy().copy()) for n, p in self.named_parameters())
        state.update((n, backend.to_device(b, "cpu").copy()) for n, b in self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into parameters and buffers, checking names and shapes first."""
        own = dict(self.named_parameters())
        buffers = {n: (m, n.rsplit(".", 1)[-1]) for p, m in self.named_modules()
                   for n in (p + b for b in m._buffers)}
        missing = [n for n in list(own) + list(buffers) if n not in state]
        unexpected = [n for n in state if n not in own and n not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        converted = {}      # every array checked and converted first, so a failure loads nothing
        for name, value in state.items():
            target = own[name].data if name in own else getattr(*buffers[name]) \
                if name in buffers else None
            if target is None:
                continue
            if tuple(np.shape(value)) != target.shape:
                raise ValueError(f"load_state_dict: {name} has shape {np.shape(value)} in the "
                                 f"state dict but {target.shape} in the module")
            try:
                value = value.data if isinstance(value, Tensor) else value
                array = np.asarray(backend.to_device(value, "cpu") if hasattr(value, "dtype")
                                   else value).astype(target.dtype, casting="same_kind")
                converted[name] = backend.to_device(array, backend.device_of(target))
            except (TypeError, ValueError) as err:
                raise TypeError(f"load_state_dict: {name} has dtype {np.asarray(value).dtype}, "
                                f"which cannot be cast to the module's {target.dtype} ({err})"
                                ) from None
        with no_grad():
            for name, array in converted.items():
                if name in own:
                    own[name].data[...] = array
                    own[name]._version += 1
                else:
                    module, attr = buffers[name]
                    getattr(module, attr)[...] = array
        return self

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def flatten_parameters(self):
        """Lay the parameters out as views into one contiguous buffer per dtype and device
        (``nn.flat``), so one launch or one norm covers them all; returns the
        ``FlatBuffer`` objects. Optimizers lay out their own parameters (group by group) when
        a group is not already one stretch of a buffer."""
        return flatten(list(self.parameters()))

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to a device and/or cast them to a float dtype."""
        if device is not None:
            device = backend.check_device(device, f"{type(self).__name__}.to")
        for m in self.modules():
            for p in m._parameters.values():
                data = p.data if device is None else backend.to_device(p.data, device)
                p.data = data if dtype is None else data.astype(dtype, copy=False)
                p.grad = None
            for name, b in list(m._buffers.items()):
                data = b if device is None else backend.to_device(b, device)
                if dtype is not None and data.dtype.kind == "f":
                    data = data.astype(dtype)
                m.register_buffer(name, data)
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # --- repr ---------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        count = self.num_parameters()
        tail = f"  # {count:,} parameters" if count else ""
        if not lines:
            return head + ")" + tail
        return head + "\n" + "\n".join(lines) + "\n)" + tail


class ModuleList(Module):
    """A list of modules, registered under their indices "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b, c)(x) = c(b(a(x)))."""

    def __init__(self, *layers):
        super().__init__(layers)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
