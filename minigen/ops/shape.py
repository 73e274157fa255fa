"""Shape and indexing ops: reshape, transpose, broadcasting, joining, slicing, padding, sort."""
import numpy as np

from ..autograd import Expand, Function, Tensor, _raw_index
from ..backend import check_axis as _axis
from ..backend import xp
from ..kernels import channels_last
from ..kernels import scatter as kscatter


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {a.shape} ({a.size} elements) into "
                             f"{shape}") from None

    def backward(self, g):
        return g.reshape(self.in_shape)


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(a, shape=shape)


class Permute(Function):
    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return g.permute(tuple(np.argsort(self.axes)))


def permute(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(_axis(x, a.ndim, "permute") for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"permute: axes {axes} are not a permutation of {a.ndim} dims")
    return Permute.apply(a, axes=axes)


def transpose(a, axis0=-2, axis1=-1):
    """Swap two axes (default: the last two)."""
    axes = list(range(a.ndim))
    i, j = _axis(axis0, a.ndim, "transpose"), _axis(axis1, a.ndim, "transpose")
    axes[i], axes[j] = axes[j], axes[i]
    return Permute.apply(a, axes=tuple(axes))


def expand(a, *shape):
    """Broadcast to ``shape`` (-1 keeps a size); the gradient is summed back (``sum_to``)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(a.shape[i - len(shape) + a.ndim] if s == -1 else s for i, s in enumerate(shape))
    return Expand.apply(a, shape=shape)


def squeeze(a, axis=None):
    if axis is None:
        return reshape(a, tuple(s for s in a.shape if s != 1))
    axes = (axis,) if isinstance(axis, int) else axis
    axes = {_axis(x, a.ndim, "squeeze") for x in axes}
    for x in axes:
        if a.shape[x] != 1:
            raise ValueError(f"squeeze: axis {x} has size {a.shape[x]}, expected 1")
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if i not in axes))


def unsqueeze(a, axis):
    axis = _axis(axis, a.ndim + 1, "unsqueeze")
    return reshape(a, a.shape[:axis] + (1,) + a.shape[axis:])


def flatten(a, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one; a 0-d tensor becomes shape (1,) (PyTorch)."""
    if a.ndim == 0:
        for d in (start_dim, end_dim):
            _axis(d, 1, "flatten")
        return reshape(a, (1,))
    start, end = _axis(start_dim, a.ndim, "flatten"), _axis(end_dim, a.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(a, a.shape[:start] + (-1,) + a.shape[end + 1:])


# --- joining and splitting ----------------------------------------------------------------
class Concatenate(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        lib = xp(arrays[0])
        if axis == 1 and any(channels_last(a) for a in arrays):
            # channels-last in, channels-last out: each row of C channels is the inputs' rows
            # side by side (NumPy would write NCHW, and the next layer would copy it back)
            shape = list(arrays[0].shape)
            shape[1] = sum(a.shape[1] for a in arrays)
            rows = lib.empty([shape[0]] + shape[2:] + shape[1:2],
                             lib.result_type(*arrays))
            return lib.concatenate(arrays, axis=1, out=lib.moveaxis(rows, -1, 1))
        return lib.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(split(g, self.bounds, axis=self.axis))


def concatenate(tensors, axis=0):
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    axis = _axis(axis, tensors[0].ndim, "concatenate")
    for t in tensors:
        if t.ndim != tensors[0].ndim or any(s != r for i, (s, r) in
                                            enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise ValueError(f"concatenate: shapes {tensors[0].shape} and {t.shape} differ "
                             f"outside axis {axis}")
    return Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def stack(tensors, axis=0):
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    axis = _axis(axis, tensors[0].ndim + 1, "stack")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all shapes must match, got {[t.shape for t in tensors]}")
    return concatenate([unsqueeze(t, axis) for t in tensors], axis=axis)


def split(a, indices_or_sections, axis=0):
    """Like numpy.split: an int gives equal sections, a list gives split points."""
    axis = _axis(axis, a.ndim, "split")
    n = a.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        if n % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {n} is not divisible into "
                             f"{indices_or_sections} sections")
        step = n // indices_or_sections
        bounds = list(range(step, n, step))
    else:
        bounds = [int(b) for b in indices_or_sections]
    return list(Split.apply(a, bounds=bounds, axis=axis))


class Split(Function):
    def forward(self, a, bounds, axis):
        self.axis, self.bounds = axis, bounds
        self.in_shape, self.in_dtype = a.shape, a.dtype
        return tuple(xp(a).split(a, bounds, axis=axis))

    def backward(self, *grads):
        if any(g is None for g in grads):
            zeros = np.split(np.empty(self.in_shape, dtype=self.in_dtype), self.bounds, self.axis)
            mod = xp(next(g for g in grads if g is not None).data)
            grads = [g if g is not None else Tensor(mod.zeros(z.shape, dtype=z.dtype))
                     for g, z in zip(grads, zeros)]
        return concatenate(grads, axis=self.axis)


# --- indexing -----------------------------------------------------------------------------
def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer)) for i in items)


def _row_index(index, shape):
    """The flat row numbers (in [0, shape[0])) of an integer-array index that selects whole
    rows along the first axis (``a[idx]``, ``a[idx, ...]``), or None for any other index."""
    if isinstance(index, tuple):
        if len(index) != 1 and not (len(index) == 2 and index[1] is Ellipsis):
            return None
        index = index[0]
    if not hasattr(index, "dtype") or index.dtype.kind not in "iu" or not shape:
        return None
    rows = index.reshape(-1)
    return xp(rows).where(rows < 0, rows + shape[0], rows) if rows.dtype.kind == "i" else rows


class GetItem(Function):
    def forward(self, a, index):
        self.index, self.in_shape = index, a.shape
        return a[index]

    def backward(self, g):
        return IndexAdd.apply(g, index=self.index, shape=self.in_shape)


class IndexAdd(Function):
    """zeros(shape) with ``g`` scatter-added at ``index`` (repeated indices accumulate)."""

    def forward(self, g, index, shape):
        self.index = index
        out = xp(g).zeros(shape, dtype=g.dtype)
        if _is_basic(index):
            out[index] = g
            return out
        rows = _row_index(index, shape)
        if rows is not None and g.dtype in (np.float32, np.float64):
            # a gather of whole rows (an embedding): the scatter kernel, 11x NumPy's add.at
            kscatter.index_add_rows(out.reshape(shape[0], -1), rows, g.reshape(rows.size, -1))
        else:
            xp(g).add.at(out, index, g)
        return out

    def backward(self, gg):
        return GetItem.apply(gg, index=self.index)


def getitem(a, index):
    """a[index] for basic (slices, ints, None, ...) and integer/boolean-array indexing."""
    index = _raw_index(index)
    try:
        return GetItem.apply(a, index=index)
    except IndexError as err:
        raise IndexError(f"getitem: {err} (tensor shape {a.shape})") from None


def flip(a, axis):
    index = [slice(None)] * a.ndim
    index[_axis(axis, a.ndim, "flip")] = slice(None, None, -1)
    return getitem(a, tuple(index))


class Pad(Function):
    def forward(self, a, pad_width, value):
        self.slices = tuple(slice(lo, lo + s) for (lo, _), s in zip(pad_width, a.shape))
        return xp(a).pad(a, pad_width, constant_values=value)

    def backward(self, g):
        return getitem(g, self.slices)


def pad(a, pad_width, value=0.0):
    """Constant padding; ``pad_width`` as in numpy.pad: ((before, after), ...) per axis,
    or an int / a (before, after) pair applied to every axis."""
    pw = np.broadcast_to(np.asarray(pad_width, dtype=int), (a.ndim, 2)) \
        if np.ndim(pad_width) < 2 else np.asarray(pad_width, dtype=int)
    if pw.shape != (a.ndim, 2) or (pw < 0).any():
        raise ValueError(f"pad: pad_width must give (before, after) >= 0 for each of "
                         f"{a.ndim} axes, got {pad_width}")
    return Pad.apply(a, pad_width=tuple(map(tuple, pw.tolist())), value=value)


class Cumsum(Function):
    def forward(self, a, axis):
        self.axis = axis
        return xp(a).cumsum(a, axis=axis)

    def backward(self, g):
        return flip(cumsum(flip(g, self.axis), self.axis), self.axis)


def cumsum(a, axis=-1):
    return Cumsum.apply(a, axis=_axis(axis, a.ndim, "cumsum"))


# --- sorting ------------------------------------------------------------------------------
class PermuteAlong(Function):
    """Reorder entries along ``axis`` by a permutation: out = take_along_axis(a, index).

    A permutation's scatter is the gather by its inverse, so the backward is this same op
    with ``index`` and ``inverse`` swapped, and every order of derivative stays exact.
    """

    def forward(self, a, index, inverse, axis):
        self.index, self.inverse, self.axis = index, inverse, axis
        return xp(a).take_along_axis(a, index, axis=axis)

    def backward(self, g):
        return PermuteAlong.apply(g, index=self.inverse, inverse=self.index, axis=self.axis)


def sort(a, axis=-1, descending=False):
    """The values of ``a`` sorted along ``axis`` (stable; ties keep their order).

    Differentiable: sorting is a permutation P of each slice, so d sort(a)/da sends the output
    gradient back through P^-1 (the argsort permutation, inverted), as in torch.sort. Used by
    the sliced Wasserstein distance (Kolouri et al. 2019), which sorts projections.
    """
    axis = _axis(axis, a.ndim, "sort")
    mod = xp(a.data)
    index = mod.argsort(-a.data if descending else a.data, axis=axis, kind="stable")
    inverse = mod.argsort(index, axis=axis)
    return PermuteAlong.apply(a, index=index, inverse=inverse, axis=axis)
