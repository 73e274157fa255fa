"""The autograd engine: Tensor, Function, the graph, backward, grad(), no_grad().

A ``Function`` computes ``forward`` on raw arrays (NumPy or CuPy) and writes ``backward`` with
minigen Tensor ops. Running that backward with grad mode off is cheap (first derivatives);
running it with grad mode on builds a graph, so second derivatives come for free
(``create_graph=True``). The engine walks an iterative topological order, sums gradients of
reused tensors, undoes broadcasting in one place (``sum_to``, beside its partner ``Expand``),
casts each gradient to its tensor's dtype, and frees the graph after use unless
``retain_graph=True``.

In-place changes (``mul_``, ``x[i] = v``, ``copy_``, ...) are not recorded in the graph. Each
tensor carries a version counter, shared with its views; a Function remembers the versions of
its inputs and outputs, so backward raises instead of returning a gradient computed from
changed values, and an in-place change of a tensor that is part of a graph raises at once.

Tensor factories (``tensor``, ``zeros``, ``randn``, ...) live in ``minigen.creation``, the ops
in ``minigen.ops``. This file is over 400 lines because the engine is one idea read in one
sitting: the Tensor, the Function protocol and the backward walk refer to each other.
"""
import contextlib
import threading
import weakref

import numpy as np

from . import backend
from .backend import xp


class _Mode(threading.local):
    """Per-thread state, as in PyTorch: one thread's backward (which runs under no_grad) or
    inference must not switch graph building off in another thread's forward."""
    grad_enabled = True
    into_leaves = False   # a first-order backward that accumulates into the leaves' .grad


_mode = _Mode()


def is_grad_enabled():
    return _mode.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def _recreate_cm(self):
        # a fresh instance per decorated call, so recursive or concurrent calls of a function
        # decorated with @no_grad() each restore their own previous mode
        return type(self)(self.enabled)

    def __enter__(self):
        self.prev, _mode.grad_enabled = _mode.grad_enabled, self.enabled

    def __exit__(self, *exc):
        _mode.grad_enabled = self.prev


def no_grad():
    """Context manager / decorator: ops inside build no graph. The mode is per thread (as in
    PyTorch): it holds in the thread that entered it, and a new thread starts with grad on."""
    return _GradMode(False)


def enable_grad():
    """Context manager / decorator: re-enable graph building (e.g. inside no_grad)."""
    return _GradMode(True)


class Tensor:
    """An array with an optional gradient and a link to the Function that made it.

    ``data`` is the NumPy (or CuPy) array; ``grad`` a Tensor of the same shape once
    ``backward`` has reached it. A tensor with ``_ctx is None`` is a leaf.
    """
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_index", "_versions", "__weakref__")
    __array_priority__ = 1000  # numpy_array + tensor -> Tensor.__radd__
    __hash__ = object.__hash__  # == is elementwise (as in PyTorch); hashing stays by identity

    def __init__(self, data, requires_grad=False, _ctx=None, _index=0):
        if type(data) is not np.ndarray:
            if isinstance(data, np.generic) and data.dtype.kind in "biufc":
                data = np.asarray(data)   # a NumPy reduction's scalar: keep its dtype
            elif not _is_array(data):
                data = _as_array(data, "Tensor")
        if requires_grad and data.dtype.kind not in "fc":
            raise TypeError(f"Tensor: requires_grad needs a floating dtype, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._ctx = _ctx          # the Function that produced this tensor (None for leaves)
        self._index = _index      # which of the Function's outputs this is
        self._versions = [0]      # bumped by in-place changes; one list shared with views

    @property
    def _version(self):
        return self._versions[0]

    @_version.setter
    def _version(self, value):
        self._versions[0] = value

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

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(tensor)``: the values of a CPU tensor (no graph)."""
        if self.device != "cpu":
            raise TypeError("Tensor.__array__: the tensor is on 'cuda'; call .numpy() or "
                            ".cpu() to copy it to the host first")
        arr = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return arr.copy() if copy else arr

    def __bool__(self):
        if self.size != 1:
            raise RuntimeError(f"bool(Tensor): the truth value of a tensor with {self.size} "
                               "elements is ambiguous; use .any() or .all() on .data")
        return bool(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data (and version counter), cut off from the graph."""
        out = Tensor(self.data)
        out._versions = self._versions
        return out

    def requires_grad_(self, flag=True):
        if flag and self.dtype.kind not in "fc":
            raise TypeError(f"Tensor.requires_grad_: needs a floating dtype, got {self.dtype}")
        self.requires_grad = flag
        return self

    def to(self, device):
        """Move to 'cpu' or 'cuda' (differentiable: the gradient moves back)."""
        return to_device(self, device)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # --- in-place changes (not differentiable; tracked by the version counter) ----------
    def _check_inplace(self, op, other=None):
        if not _mode.grad_enabled:
            return
        if self.requires_grad and self.is_leaf:
            raise RuntimeError(f"Tensor.{op}: in-place change of a leaf that requires grad; "
                               "wrap it in minigen.no_grad()")
        if self.requires_grad:
            raise RuntimeError(
                f"Tensor.{op}: in-place change of a tensor (shape {self.shape}) made by "
                f"{type(self._ctx).__name__}, which is part of a graph: the gradient would "
                "ignore the change. Use the out-of-place form (y = y * 3, F.where(mask, v, y), "
                "F.cat) or change a detached copy")
        if isinstance(other, Tensor) and other.requires_grad:
            raise RuntimeError(f"Tensor.{op}: the value requires grad, but an in-place write "
                               "is not recorded in the graph; build the tensor out of place "
                               "(F.where, F.cat, F.stack) or pass value.detach()")

    def _inplace(self, op, update, other=None):
        self._check_inplace(op, other)
        update()
        self._version += 1
        return self

    def zero_(self):
        return self._inplace("zero_", lambda: self.data.fill(0))

    def fill_(self, value):
        return self._inplace("fill_", lambda: self.data.fill(value))

    def copy_(self, other):
        return self._inplace("copy_", lambda: xp(self.data).copyto(self.data, _raw(other)),
                             other)

    def add_(self, other, alpha=1):
        return self._inplace("add_", lambda: _iop(self.data, _raw(other), alpha, np.add), other)

    def mul_(self, other):
        return self._inplace("mul_", lambda: _iop(self.data, _raw(other), 1, np.multiply),
                             other)

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def __setitem__(self, index, value):
        def update():
            self.data[_raw_index(index)] = _raw(value)
        self._inplace("__setitem__", update, value)

    def _grad_home(self):
        """A Tensor over preallocated memory that this leaf's next gradient may be written
        into directly, or None (a Parameter in a flat buffer answers its slice of the
        buffer's gradient while it holds no gradient; see ``grad_destination``)."""
        return None

    # --- backward -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad``.

        ``grad`` may be omitted only for a tensor with one element.
        """
        run_backward([self], [grad], retain_graph=retain_graph or create_graph,
                     create_graph=create_graph)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def grad_destination(t, fn):
    """Where a backward may write the gradient of input ``t`` in place of a fresh array: a
    Tensor whose ``.data`` the backward fills completely (``out=``) and then returns as that
    gradient, or None. Only while a first-order backward accumulates into ``.grad`` (not under
    ``grad()`` or ``create_graph=True``) and only for a leaf with no gradient yet whose
    gradient has a home of its own (a Parameter in a flat buffer): the engine then stores the
    returned Tensor as ``t.grad`` with no copy. A leaf reached twice gets its home once, the
    later gradients are added as usual; a leaf that is more than one input of ``fn`` (the
    Function asking) gets none, since the gradient of its other slot, delivered first, would
    be copied over the one written there."""
    if not _mode.into_leaves or t._ctx is not None or not t.requires_grad:
        return None
    home = t._grad_home()
    if home is not None and sum(u is t for u in fn.inputs) > 1:
        return None
    return home


def _is_array(data):
    return isinstance(data, np.ndarray) or type(data).__module__.startswith("cupy")


def _as_array(data, where, device="cpu", dtype=None):
    """Numbers (a list, scalar, NumPy array or Tensor) as an array on ``device`` of ``dtype``
    (default: Python floats become the default float dtype, arrays keep theirs); strings,
    None and other objects are refused."""
    arr = backend.to_device(data, device)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{where}: expected numbers (bool, int, float or complex), got "
                        f"{type(data).__name__} of dtype {arr.dtype}")
    if dtype is None and not hasattr(data, "dtype") and arr.dtype.kind == "f":
        dtype = backend.get_default_dtype()
    return arr if dtype is None else arr.astype(dtype, copy=False)


def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


def _iop(target, other, alpha, ufunc):
    if alpha != 1:
        other = other * alpha
    ufunc(target, other, out=target)


def as_tensor(x, like=None):
    """Wrap a scalar or array as a constant Tensor, matching ``like``'s dtype for scalars
    (a NumPy array is copied, so later changes to it do not reach the graph)."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        mod = xp(like.data)
        if isinstance(x, (int, float, bool, np.number)) and like.dtype.kind == "f":
            return Tensor(mod.asarray(x, dtype=like.dtype))
        return Tensor(mod.asarray(x))
    arr = _as_array(x, "as_tensor")
    return Tensor(arr.copy() if arr is x else arr)


class Function:
    """One differentiable operation.

    Subclasses implement ``forward(self, *arrays, **kwargs) -> array | tuple`` on raw arrays
    and ``backward(self, *grads) -> grad | tuple`` with Tensor ops. ``self.inputs`` are the
    input Tensors, kept with their versions, so an in-place change before backward is detected.
    """
    differentiable = True  # False: the backward uses raw arrays (no double backward)

    __slots__ = ("inputs", "input_versions", "outputs", "output_versions", "__dict__")

    @classmethod
    def apply(cls, *inputs, **kwargs):
        fn = cls()
        tensors = inputs
        for x in inputs:
            if not isinstance(x, Tensor):
                tensors = tuple(x if isinstance(x, Tensor) else as_tensor(x) for x in inputs)
                break
        needs = False
        if _mode.grad_enabled:
            for t in tensors:
                if t.requires_grad:
                    needs = True
                    break
        if len(tensors) == 2:  # the common cases, unrolled: no list of arrays to build
            x, y = tensors
            outs = fn.forward(x.data, y.data, **kwargs)
            versions = (x._versions[0], y._versions[0])
        elif len(tensors) == 1:
            outs = fn.forward(tensors[0].data, **kwargs)
            versions = (tensors[0]._versions[0],)
        else:
            outs = fn.forward(*[t.data for t in tensors], **kwargs)
            versions = tuple(t._versions[0] for t in tensors)
        if type(outs) is not tuple:  # one output: the common case, without the tuple loops
            out = Tensor(outs, needs, fn, 0) if needs else Tensor(outs)
            if out.data.base is not None:
                _share_versions(out, tensors)
            if needs:
                fn.inputs = tensors
                fn.input_versions = versions
                fn.outputs = (weakref.ref(out),)
                fn.output_versions = (out._versions[0],)
            return out
        if not needs:
            results = tuple(Tensor(o) for o in outs)
        else:
            fn.inputs = tensors
            fn.input_versions = versions
            results = tuple(Tensor(o, True, fn, i) for i, o in enumerate(outs))
        for r in results:
            if r.data.base is not None:
                _share_versions(r, tensors)
        if needs:
            fn.outputs = tuple(weakref.ref(r) for r in results)
            fn.output_versions = tuple(r._versions[0] for r in results)
        return results

    def output(self, i=0):
        """The i-th output Tensor (for backwards written in terms of the result, e.g. exp)."""
        out = self.outputs[i]()
        if out is None:
            raise RuntimeError(f"{type(self).__name__}.backward: its output was freed")
        return out

    def check_versions(self):
        """Raise if an input or an output was changed in place since the forward pass:
        backward would read the new values, or send gradient for entries that no longer
        depend on the inputs."""
        for i, t in enumerate(self.inputs):
            if t._versions[0] != self.input_versions[i]:
                self._modified("input", i, t, self.input_versions[i])
        for i, ref in enumerate(self.outputs):
            t = ref()
            if t is not None and t._versions[0] != self.output_versions[i]:
                self._modified("output", i, t, self.output_versions[i])

    def _modified(self, kind, i, t, version):
        raise RuntimeError(
            f"{type(self).__name__}.backward: {kind} {i} (shape {t.shape}) was modified in "
            f"place after the forward pass (version {t._version}, expected {version})")

    def release(self):
        self.inputs = None

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} defines no forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} defines no backward")


def _share_versions(view, tensors):
    """A view shares the version counter of the tensor it looks into (as in PyTorch), so an
    in-place change through either is seen by every Function that saved the other."""
    may_share = xp(view.data).may_share_memory
    for t in tensors:
        if may_share(view.data, t.data):
            view._versions = t._versions
            return


# --- the engine's own Functions: broadcasting, dtype and device moves ----------------------
class Expand(Function):
    """Broadcast to a larger shape; the engine's sum_to undoes it in backward."""

    def forward(self, a, shape):
        try:
            return xp(a).broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast {a.shape} to {shape}") from None

    def backward(self, g):
        return g


class SumTo(Function):
    """Sum a broadcast array back down to ``shape``; backward broadcasts again."""

    def forward(self, a, shape):
        self.in_shape = a.shape
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                          if s == 1 and a.shape[i + lead] != 1)
        return (sum_axes(a, axes, keepdims=True) if axes else a).reshape(shape)

    def backward(self, g):
        return Expand.apply(g, shape=self.in_shape)


def sum_axes(a, axes, keepdims=False):
    """a.sum(axis=axes) for a raw array, laid out for speed: a float array's short summed axes
    (2 to SHORT_AXIS entries, such as the 2 x 2 copies of a nearest upsample) are summed as
    adds of their slices, each one pass over the output; then the outer axis, when it is
    summed, as whole-slice adds, after which the rest are contiguous rows. NumPy's reduce over
    short strided axes runs an inner loop per pair: (64, 32, 4, 2, 4, 2) -> (64, 32, 4, 1, 4, 1)
    took 1.16 ms against 0.10 ms as slice adds, and a bias gradient (N, C, H, W) -> (C,) 4x
    longer than the slab adds (one core)."""
    axes = tuple(axes)
    short = [ax for ax in axes if 2 <= a.shape[ax] <= SHORT_AXIS] \
        if a.dtype.kind in "fc" else []
    out = a
    for ax in short:
        out = _add_slices(out, ax)
    rest = tuple(ax for ax in axes if ax not in short)
    if len(rest) > 1 and rest[0] == 0:
        out = out.sum(axis=0, keepdims=True).sum(axis=rest[1:], keepdims=True)
    elif rest:
        out = out.sum(axis=rest, keepdims=True)
    return out if keepdims else out.reshape([d for i, d in enumerate(a.shape) if i not in axes])


SHORT_AXIS = 4


def _add_slices(a, axis):
    """a summed over ``axis`` (kept with length 1) as adds of its slices, in index order."""
    lead = (slice(None),) * axis
    out = a[lead + (slice(0, 1),)] + a[lead + (slice(1, 2),)]
    for i in range(2, a.shape[axis]):
        out += a[lead + (slice(i, i + 1),)]
    return out


def sum_to(a, shape):
    """Undo broadcasting: sum ``a`` down to ``shape`` (the one place this happens)."""
    return a if a.shape == tuple(shape) else SumTo.apply(a, shape=tuple(shape))


class Cast(Function):
    """Change the dtype; the gradient is cast back."""

    def forward(self, a, dtype):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return cast(g, self.in_dtype)


def cast(a, dtype):
    return a if a.dtype == dtype else Cast.apply(a, dtype=dtype)


class ToDevice(Function):
    def forward(self, a, device):
        self.source = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, g):
        return to_device(g, self.source)


def to_device(a, device):
    """Move to 'cpu' or 'cuda'; the gradient moves back."""
    device = backend.check_device(device, "Tensor.to")
    return a if a.device == device else ToDevice.apply(a, device=device)


def _topological_order(roots):
    """Functions reachable from ``roots``, each after every Function that consumes it."""
    order, visited = [], set()
    stack = [(t._ctx, False) for t in roots if t._ctx is not None]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if fn in visited:
            continue
        visited.add(fn)
        if fn.inputs is None:
            raise RuntimeError(f"backward through {type(fn).__name__} a second time: the graph "
                               "was freed; use backward(retain_graph=True) the first time")
        stack.append((fn, True))
        for t in fn.inputs:
            if t._ctx is not None and t._ctx not in visited:
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
    pending = {}   # Function -> list of its output grads (Functions hash by identity)
    captured = {id(t): None for t in inputs} if inputs is not None else None

    def deliver(t, g):
        ctx = t._ctx
        if captured is not None:
            if id(t) in captured:
                captured[id(t)] = g if captured[id(t)] is None else captured[id(t)] + g
        elif ctx is None and t.requires_grad:
            t.grad = g if t.grad is None else t.grad + g
        if ctx is not None:
            slot = pending.get(ctx)
            if slot is None:
                slot = pending[ctx] = [None] * len(ctx.outputs)
            i = t._index
            slot[i] = g if slot[i] is None else slot[i] + g

    outer = _mode.into_leaves       # a backward run inside a backward (e.g. in a hook)
    _mode.into_leaves = captured is None and not create_graph
    try:
        order = _walk(outputs, grad_outputs, create_graph, deliver, pending)
    finally:
        _mode.into_leaves = outer
    if not retain_graph:  # after the walk: a backward may still read an earlier output
        for fn in order:
            fn.release()
    if captured is not None:
        return [captured[id(t)] for t in inputs]
    return None


def _walk(outputs, grad_outputs, create_graph, deliver, pending):
    """The walk itself: seed, then each Function's backward in topological order, handing
    each input its gradient through ``deliver``; returns the order."""
    with _GradMode(create_graph):
        for out, g in zip(outputs, grad_outputs):
            deliver(out, _seed_grad(out, g))
        order = _topological_order(outputs)
        for fn in order:
            grads = pending.pop(fn, None)
            if grads is None:
                continue
            if create_graph and not fn.differentiable:
                raise RuntimeError(f"{type(fn).__name__}: double backward is not supported")
            fn.check_versions()
            in_grads = fn.backward(*grads)
            if type(in_grads) is not tuple:
                in_grads = (in_grads,)
            for t, g in zip(fn.inputs, in_grads):
                if g is not None and t.requires_grad:
                    if g.data.shape != t.data.shape:
                        g = sum_to(g, t.data.shape)
                    if g.data.dtype != t.data.dtype:
                        g = cast(g, t.data.dtype)
                    deliver(t, g)
    return order


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
