"""The autograd engine: Tensor, Function, the graph, backward, grad(), no_grad().

A ``Function`` computes ``forward`` on raw arrays (NumPy or CuPy) and writes ``backward`` with
minigen Tensor ops. Running that backward with grad mode off is cheap (first derivatives);
running it with grad mode on builds a graph, so second derivatives come for free
(``create_graph=True``). The engine walks an iterative topological order, sums gradients of
reused tensors, undoes broadcasting in one place (``_sum_to``) and frees the graph after use
unless ``retain_graph=True``.
"""
import contextlib
import functools
import weakref

import numpy as np

from . import backend
from .backend import xp

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev


def no_grad():
    """Context manager / decorator: ops inside build no graph."""
    return _GradMode(False)


def enable_grad():
    """Context manager / decorator: re-enable graph building (e.g. inside no_grad)."""
    return _GradMode(True)


class Tensor:
    """An array with an optional gradient and a link to the Function that made it.

    ``data`` is the NumPy (or CuPy) array; ``grad`` a Tensor of the same shape once
    ``backward`` has reached it. A tensor with ``_ctx is None`` is a leaf.
    """
    __array_priority__ = 1000  # numpy_array + tensor -> Tensor.__radd__

    def __init__(self, data, requires_grad=False, _ctx=None, _index=0):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._ctx = _ctx          # the Function that produced this tensor (None for leaves)
        self._index = _index      # which of the Function's outputs this is
        self._version = 0         # bumped by in-place changes

    # --- properties ------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(backend.to_device(self.data, "cpu"), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed); never a graph."""
        return backend.to_device(self.data, "cpu")

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    def to(self, device):
        """Move to 'cpu' or 'cuda' (differentiable: the gradient moves back)."""
        from .functional import to_device
        return to_device(self, device)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # --- in-place changes (not differentiable; tracked by the version counter) ----------
    def _check_inplace(self, op):
        if self.requires_grad and _grad_enabled and self.is_leaf:
            raise RuntimeError(f"Tensor.{op}: in-place change of a leaf that requires grad; "
                               "wrap it in minigen.no_grad()")

    def _inplace(self, op, update):
        self._check_inplace(op)
        update()
        self._version += 1
        return self

    def zero_(self):
        return self._inplace("zero_", lambda: self.data.fill(0))

    def fill_(self, value):
        return self._inplace("fill_", lambda: self.data.fill(value))

    def copy_(self, other):
        return self._inplace("copy_", lambda: xp(self.data).copyto(self.data, _raw(other)))

    def add_(self, other, alpha=1):
        return self._inplace("add_", lambda: _iop(self.data, _raw(other), alpha, np.add))

    def mul_(self, other):
        return self._inplace("mul_", lambda: _iop(self.data, _raw(other), 1, np.multiply))

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def __setitem__(self, index, value):
        def update():
            self.data[_raw_index(index)] = _raw(value)
        self._inplace("__setitem__", update)

    # --- backward -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad``.

        ``grad`` may be omitted only for a tensor with one element.
        """
        run_backward([self], [grad], retain_graph=retain_graph or create_graph,
                     create_graph=create_graph)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


def _iop(target, other, alpha, ufunc):
    if alpha != 1:
        other = other * alpha
    ufunc(target, other, out=target)


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """Make a leaf tensor; floats default to ``backend.get_default_dtype()``."""
    if isinstance(data, Tensor):
        data = data.data
    device = backend.check_device(device, "tensor")
    arr = backend.to_device(data, device)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif not hasattr(data, "dtype") and arr.dtype.kind == "f":
        arr = arr.astype(backend.get_default_dtype(), copy=False)
    if arr is data:
        arr = arr.copy()
    if requires_grad and arr.dtype.kind != "f":
        raise TypeError(f"tensor: requires_grad needs a floating dtype, got {arr.dtype}")
    return Tensor(arr, requires_grad=requires_grad)


def as_tensor(x, like=None):
    """Wrap a scalar or array as a constant Tensor, matching ``like``'s dtype for scalars."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        mod = xp(like.data)
        if isinstance(x, (int, float, bool, np.number)) and like.dtype.kind == "f":
            return Tensor(mod.asarray(x, dtype=like.dtype))
        return Tensor(mod.asarray(x))
    return tensor(x)


class Function:
    """One differentiable operation.

    Subclasses implement ``forward(self, *arrays, **kwargs) -> array | tuple`` on raw arrays
    and ``backward(self, *grads) -> grad | tuple`` with Tensor ops. ``self.inputs`` are the
    input Tensors, kept with their versions, so an in-place change before backward is detected.
    """
    differentiable = True  # False: the backward uses raw arrays (no double backward)

    @classmethod
    def apply(cls, *inputs, **kwargs):
        fn = cls()
        tensors = [x if isinstance(x, Tensor) else as_tensor(x) for x in inputs]
        outs = fn.forward(*[t.data for t in tensors], **kwargs)
        multi = isinstance(outs, tuple)
        outs = outs if multi else (outs,)
        needs = _grad_enabled and any(t.requires_grad for t in tensors)
        if not needs:
            results = tuple(Tensor(o) for o in outs)
            return results if multi else results[0]
        fn.inputs = tensors
        fn.input_versions = [t._version for t in tensors]
        results = tuple(Tensor(o, requires_grad=True, _ctx=fn, _index=i) for i, o in enumerate(outs))
        fn.outputs = [weakref.ref(r) for r in results]
        return results if multi else results[0]

    def output(self, i=0):
        """The i-th output Tensor (for backwards written in terms of the result, e.g. exp)."""
        out = self.outputs[i]()
        if out is None:
            raise RuntimeError(f"{type(self).__name__}.backward: its output was freed")
        if out._version:
            raise RuntimeError(f"{type(self).__name__}.backward: its output (shape {out.shape}) "
                               "was modified in place after the forward pass")
        return out

    def check_versions(self):
        """Raise if an input was changed in place since the forward pass (backward would
        read the new values and return a wrong gradient)."""
        for i, (t, version) in enumerate(zip(self.inputs, self.input_versions)):
            if t._version != version:
                raise RuntimeError(
                    f"{type(self).__name__}.backward: input {i} (shape {t.shape}) was modified "
                    f"in place after the forward pass (version {t._version}, expected "
                    f"{version})")

    def release(self):
        self.inputs = None

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} defines no forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} defines no backward")


def _sum_to(grad, shape):
    """Undo broadcasting: sum ``grad`` down to ``shape`` (the one place this happens)."""
    if grad.shape == shape:
        return grad
    from .functional import sum_to
    return sum_to(grad, shape)


def _topological_order(roots):
    """Functions reachable from ``roots``, each after every Function that consumes it."""
    order, visited = [], set()
    stack = [(t._ctx, False) for t in roots if t._ctx is not None]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        if fn.inputs is None:
            raise RuntimeError(f"backward through {type(fn).__name__} a second time: the graph "
                               "was freed; use backward(retain_graph=True) the first time")
        stack.append((fn, True))
        for t in fn.inputs:
            if t._ctx is not None and id(t._ctx) not in visited:
                stack.append((t._ctx, False))
    order.reverse()  # consumers before producers
    return order


def _seed_grad(out, grad):
    if grad is None:
        if out.size != 1:
            raise RuntimeError(f"backward: output has shape {out.shape}; a gradient can be "
                               "implied only for a single-element output, pass grad=")
        return Tensor(xp(out.data).ones_like(out.data))
    grad = as_tensor(grad, like=out)
    if grad.shape != out.shape:
        raise ValueError(f"backward: grad has shape {grad.shape}, expected {out.shape}")
    return grad


def run_backward(outputs, grad_outputs, retain_graph=False, create_graph=False, inputs=None):
    """Backpropagate from ``outputs``. Leaf gradients go to ``.grad``; if ``inputs`` is
    given, their gradients are returned instead and no ``.grad`` is touched."""
    for out in outputs:
        if not out.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no graph")
    pending = {}   # id(fn) -> list of output grads
    captured = {id(t): None for t in inputs} if inputs is not None else None

    def deliver(t, g):
        if captured is not None:
            if id(t) in captured:
                captured[id(t)] = g if captured[id(t)] is None else captured[id(t)] + g
        elif t._ctx is None and t.requires_grad:
            t.grad = g if t.grad is None else t.grad + g
        if t._ctx is not None:
            slot = pending.setdefault(id(t._ctx), [None] * len(t._ctx.outputs))
            slot[t._index] = g if slot[t._index] is None else slot[t._index] + g

    with _GradMode(create_graph):
        for out, g in zip(outputs, grad_outputs):
            deliver(out, _seed_grad(out, g))
        order = _topological_order(outputs)
        for fn in order:
            grads = pending.pop(id(fn), None)
            if grads is None:
                continue
            if create_graph and not fn.differentiable:
                raise RuntimeError(f"{type(fn).__name__}: double backward is not supported")
            fn.check_versions()
            in_grads = fn.backward(*grads)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for t, g in zip(fn.inputs, in_grads):
                if g is not None and t.requires_grad:
                    deliver(t, _sum_to(g, t.shape))
    if not retain_graph:  # after the walk: a backward may still read an earlier output
        for fn in order:
            fn.release()
    if captured is not None:
        return [captured[id(t)] for t in inputs]
    return None


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, without touching ``.grad``.

    With ``create_graph=True`` the result carries a graph, so it can be differentiated again.
    """
    single = isinstance(inputs, Tensor)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs)
    retain = create_graph if retain_graph is None else retain_graph
    grads = run_backward(outputs, grad_outputs, retain, create_graph, inputs=inputs)
    for i, (t, g) in enumerate(zip(inputs, grads)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} (shape {t.shape}) is not reached from "
                                   "the outputs; pass allow_unused=True to get None")
    return grads[0] if single else grads


def manual_seed(seed):
    """Seed minigen's default random generators: same seed, same numbers."""
    backend.manual_seed(seed)


def _wrap_factory(make):
    @functools.wraps(make)
    def factory(*shape, dtype=None, requires_grad=False, device="cpu", **kw):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        device = backend.check_device(device, make.__name__)
        mod = np if device == "cpu" else backend.cupy()
        dtype = dtype or backend.get_default_dtype()
        arr = make(mod, shape, dtype, device=device, **kw)
        return Tensor(arr, requires_grad=requires_grad)
    return factory


@_wrap_factory
def zeros(mod, shape, dtype, device):
    return mod.zeros(shape, dtype=dtype)


@_wrap_factory
def ones(mod, shape, dtype, device):
    return mod.ones(shape, dtype=dtype)


@_wrap_factory
def randn(mod, shape, dtype, device, rng=None):
    """Standard normal samples from ``rng`` (default: the generator of ``manual_seed``)."""
    return backend.as_rng(rng, device).standard_normal(shape).astype(dtype, copy=False)


@_wrap_factory
def rand(mod, shape, dtype, device, rng=None):
    """Uniform [0, 1) samples from ``rng`` (default: the generator of ``manual_seed``)."""
    return backend.as_rng(rng, device).random(shape).astype(dtype, copy=False)


def zeros_like(t, requires_grad=False):
    return Tensor(xp(t.data).zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    return Tensor(xp(t.data).ones_like(t.data), requires_grad=requires_grad)


def full(shape, value, dtype=None, device="cpu"):
    return Tensor((np if backend.check_device(device, "full") == "cpu" else backend.cupy())
                  .full(shape, value, dtype=dtype or backend.get_default_dtype()))


def arange(*args, dtype=None, device="cpu"):
    mod = np if backend.check_device(device, "arange") == "cpu" else backend.cupy()
    return Tensor(mod.arange(*args, dtype=dtype))
