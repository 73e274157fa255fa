"""Parameter, and the flat buffer its values and gradient can live in.

``flatten(params)`` lays the parameters end to end in one contiguous 1-D array per dtype and
device (a ``FlatBuffer``), and re-points each one's ``.data`` at its slice:

    buffer.data[o_i : o_i + n_i].reshape(shape_i) is params[i].data
    buffer.grad[o_i : o_i + n_i].reshape(shape_i) holds params[i].grad

so an optimizer updates every parameter of a group in one kernel launch, backward writes
gradients into the buffer in place, and they are clipped by one norm. For the user a
flattened parameter is the same object with the same values; the differences are where the
arrays live:

* A first-order ``backward`` writes a parameter's gradient straight into its slice when the
  parameter has none yet: the engine's ``grad_destination`` hands the slice to the backward
  (``Linear`` computes dW = g^T x by one GEMM into it, and the bias gradient by one sum into
  it), so nothing is copied. Any other ``p.grad = g`` copies g's values into the slice, and
  ``p.grad`` is then a Tensor over it (a gradient that carries a graph, from
  ``backward(create_graph=True)``, is kept as given). ``p.grad = None`` zeroes the slice.
* ``zero_grad`` through an optimizer drops the gradients without a fill: the next gradient
  overwrites its slice whole. A slice whose member then gets no gradient is zeroed when the
  buffer's gradient is read as a stretch (``grad_spans``, so ``clip_grad_norm_``), so every
  reader sees zeros wherever a member has no gradient.
* ``p.data = array`` rebinds ``p.data`` as for any Tensor; the parameter leaves its buffer,
  which is marked stale, and an optimizer holding it lays its parameters out afresh at its
  next step (``Module.to`` and ``copy.deepcopy`` end the same way).

Why the gradient is written in place: on the 2-core machine (MLP 784-512-512-784, batch 256,
Adam, float32) the one-launch flat Adam update takes 1.8-2.7 ms against 3.4 ms per parameter,
but when backward's gradients were copied into the buffer and the buffer zero-filled, those
copies cost as much again and the flat step was the slower one (12.7 against 11.6 ms). With
the gradients written in place the optimizers are flat by default (numbers in
``benchmarks/README.md``, "A step inside one process").
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..backend import xp


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True); it may live in a
    ``FlatBuffer`` (see the module docstring)."""
    _slot = None       # (buffer, index in buffer.params, gradient Tensor over its slice)

    def __init__(self, data, requires_grad=True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter(" + super().__repr__() + ")"

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, array):
        slot = self._slot
        if slot is not None and array is not self._data:
            slot[0].valid = False
            self._slot = None
        self._data = array

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        slot = self._slot
        if slot is None:
            self._grad = value
            return
        buffer, index, view = slot
        if value is view:       # a backward wrote it there (``_grad_home``)
            buffer.unset.discard(index)
            self._grad = view
            return
        if value is None or value.requires_grad:
            view.data.fill(0)
            buffer.unset.discard(index)
            self._grad = value
            return
        if tuple(value.shape) != self.shape:
            raise ValueError(f"Parameter.grad: the gradient has shape {tuple(value.shape)}, "
                             f"the parameter {self.shape}")
        xp(view.data).copyto(view.data, value.data)
        buffer.unset.discard(index)
        self._grad = view

    def _grad_home(self):
        """The slice of the buffer's gradient while this parameter has no gradient: the
        engine's ``grad_destination`` lets a backward write the gradient there (no copy)."""
        slot = self._slot
        if slot is None or self._grad is not None or not slot[0].valid:
            return None
        return slot[2]

    def _attach(self, buffer, index):
        """Make this parameter member ``index`` of ``buffer`` (its values already copied)."""
        old = self._slot
        if old is not None and old[0] is not buffer:
            old[0].valid = False
        start, stop = buffer.offsets[index], buffer.offsets[index + 1]
        grad = self._grad
        self._data = buffer.data[start:stop].reshape(self.shape)
        self._slot = (buffer, index, Tensor(buffer.grad[start:stop].reshape(self.shape)))
        self._grad = None
        if grad is not None:
            self.grad = grad

    @property
    def flat(self):
        """(buffer, index) when this parameter is member ``index`` of a FlatBuffer, else None."""
        slot = self._slot
        return None if slot is None else slot[:2]


class FlatBuffer:
    """Parameters of one dtype and device laid end to end: ``data`` and ``grad`` are 1-D
    arrays, member i occupies ``[offsets[i], offsets[i + 1])``. ``valid`` turns False when
    any member leaves (its ``.data`` rebound, or it joined another buffer).

    ``unset`` holds the members whose gradient ``zero_grad`` dropped without filling their
    stretch of ``grad`` with zeros: the next gradient overwrites it whole (a backward writes
    it there, or the setter copies it), so the fill is only needed where a stretch is read
    while its member has no gradient: ``settle`` zeros those, and ``grad_spans`` settles
    before it hands out a stretch."""

    def __init__(self, params):
        self.params = list(params)
        if not self.params or len({id(p) for p in self.params}) < len(self.params):
            raise ValueError("FlatBuffer: needs at least one parameter, each at most once")
        first = self.params[0].data
        dtype, device = first.dtype, backend.device_of(first)
        for p in self.params:
            if p.dtype != dtype or p.device != device:
                raise ValueError(f"FlatBuffer: every parameter must be {dtype} on {device}, "
                                 f"got {p.dtype} on {p.device}")
        self.offsets = np.concatenate([[0], np.cumsum([p.size for p in self.params])]
                                      ).astype(int).tolist()
        mod = xp(first)
        self.data = mod.empty(self.offsets[-1], dtype)
        self.grad = mod.zeros(self.offsets[-1], dtype)
        for i, p in enumerate(self.params):
            self.data[self.offsets[i]:self.offsets[i + 1]] = p.data.reshape(-1)
        self.unset = set()
        for i, p in enumerate(self.params):
            p._attach(self, i)
        self.valid = True

    def __deepcopy__(self, memo):
        """A copy's members are copies whose arrays are no views of this buffer: they must be
        laid out afresh, so the copy is a stale, empty buffer."""
        dead = FlatBuffer.__new__(FlatBuffer)
        dead.params, dead.offsets, dead.valid, dead.unset = [], [0], False, set()
        dead.data = dead.grad = None
        return dead

    def __repr__(self):
        return (f"FlatBuffer({len(self.params)} parameters, {self.offsets[-1]} elements"
                f"{'' if self.valid else ', stale'})")

    def index_range(self, params):
        """(i, j) when ``params`` are exactly members i..j-1 in order of this valid buffer,
        else None."""
        if not self.valid or not params:
            return None
        slot = params[0]._slot
        if slot is None or slot[0] is not self:
            return None
        i = slot[1]
        j = i + len(params)
        if j > len(self.params) or any(a is not b for a, b in zip(self.params[i:j], params)):
            return None
        return i, j

    def span(self, i, j):
        """The element range [start, stop) of members i..j-1."""
        return self.offsets[i], self.offsets[j]

    def zero_grad(self, i, j):
        """Members i..j-1 lose their gradients; their stretches are filled later, and only
        where still needed (``unset``, ``settle``)."""
        for k in range(i, j):
            self.params[k]._grad = None
        self.unset.update(range(i, j))

    def settle(self, i, j):
        """Zero the stretch of every member among i..j-1 that holds no gradient and was not
        zeroed since ``zero_grad``: one fill per run of such members."""
        def stale(k):
            return k < j and k in self.unset and self.params[k]._grad is None

        k = i
        while self.unset and k < j:
            if not stale(k):
                k += 1
                continue
            m = k + 1
            while stale(m):
                m += 1
            start, stop = self.span(k, m)
            self.grad[start:stop].fill(0)
            self.unset.difference_update(range(k, m))
            k = m

    def gather_grads(self, i, j):
        """Which of members i..j-1 have a gradient; a gradient held outside the buffer (one
        with a graph) is copied into it first, detached."""
        present = []
        for p in self.params[i:j]:
            g = p.grad
            if g is not None and g is not p._slot[2]:
                view = p._slot[2].data
                xp(view).copyto(view, g.data)
            present.append(g is not None)
        return present


def flatten(params):
    """Lay ``params`` (Parameters) out in one new FlatBuffer per dtype and device, in the
    order given; return the buffers."""
    buckets = {}
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"flatten: only Parameters can live in a flat buffer, got "
                            f"{type(p).__name__}")
        buckets.setdefault((p.dtype, p.device), []).append(p)
    return [FlatBuffer(members) for members in buckets.values()]


def grad_spans(params):
    """Split ``params`` into stretches of gradient buffers and the rest: ([(grad slice) ...],
    [params outside any valid buffer]). A stretch is the gradient of consecutive members of
    one valid buffer, all in ``params``; members without a gradient hold zeros there."""
    spans, rest, run = [], [], []

    def close():
        if run:
            buffer, i = run[0]._slot[0], run[0]._slot[1]
            buffer.settle(i, i + len(run))
            start, stop = buffer.span(i, i + len(run))
            spans.append(buffer.grad[start:stop])
            run.clear()

    for p in params:
        slot = getattr(p, "_slot", None)
        if slot is None or not slot[0].valid or (p.grad is not None and p.grad is not slot[2]):
            close()
            rest.append(p)
            continue
        if run and not (run[-1]._slot[0] is slot[0] and run[-1]._slot[1] + 1 == slot[1]):
            close()
        run.append(p)
    close()
    return spans, rest


class Segment:
    """Members i..j-1 of one buffer: the parameters of one optimizer group of one dtype and
    device, at ``positions`` in the optimizer's parameter list; ``moments`` holds the
    optimizer's per-element state over them (name -> 1-D array, zeros when first asked)."""

    def __init__(self, group, buffer, i, j, positions):
        self.group, self.buffer, self.i, self.j = group, buffer, i, j
        self.positions = positions
        self.start = buffer.offsets[i]
        self.moments = {}

    def moment(self, name):
        if name not in self.moments:
            self.moments[name] = xp(self.buffer.data).zeros(
                self.buffer.offsets[self.j] - self.start, self.buffer.data.dtype)
        return self.moments[name]

    def elements(self, a, b):
        """The element range of local members a..b-1, relative to the segment."""
        offsets = self.buffer.offsets
        return offsets[self.i + a] - self.start, offsets[self.i + b] - self.start

    def stretches(self, keys):
        """(a, b, key, p, g, moment) for each longest stretch of local members a..b-1 that
        have gradients and equal ``keys``: p, g the stretch of the buffer's values and
        gradients, ``moment(name)`` that of a moment (gradients held outside the buffer are
        copied in first)."""
        present = self.buffer.gather_grads(self.i, self.j)
        a, n = 0, len(present)
        while a < n:
            if not present[a]:
                a += 1
                continue
            b = a + 1
            while b < n and present[b] and keys[b] == keys[a]:
                b += 1
            start, stop = self.elements(a, b)
            base = self.start
            yield (a, b, keys[a], self.buffer.data[base + start:base + stop],
                   self.buffer.grad[base + start:base + stop],
                   lambda name, start=start, stop=stop: self.moment(name)[start:stop])
            a = b

    def moment_view(self, name, local):
        """Moment ``name`` of local member ``local``, shaped like the parameter."""
        start, stop = self.elements(local, local + 1)
        return self.moment(name)[start:stop].reshape(self.buffer.params[self.i + local].shape)


class GroupLayout:
    """Optimizer groups (lists of parameters) over flat buffers: ``segments`` (one per group,
    dtype and device), ``loose`` (positions, counted over all groups, of tensors that are not
    Parameters: updated one by one) and ``fills`` ((buffer, i, j) stretches of gradient to
    zero, adjacent segments merged). Buffers the parameters already live in are kept when
    each segment is one stretch of one; otherwise every Parameter is laid out afresh, group
    after group, one buffer per dtype and device. ``states[position]`` (name -> array, the
    optimizer's per-parameter state) is copied into the moments, whose views replace it."""

    def __init__(self, groups, states):
        buckets, self.loose, k = [], [], 0
        for gi, params in enumerate(groups):
            kinds = {}
            for p in params:
                if isinstance(p, Parameter):
                    kinds.setdefault((p.dtype, p.device), []).append(k)
                else:
                    self.loose.append(k)
                k += 1
            buckets.extend((gi, positions) for positions in kinds.values())
        everything = [p for params in groups for p in params]
        ranges = [self._range([everything[k] for k in positions]) for _, positions in buckets]
        if any(r is None for r in ranges):
            flatten([everything[k] for _, positions in buckets for k in positions])
            ranges = [self._range([everything[k] for k in positions])
                      for _, positions in buckets]
        self.segments = [Segment(gi, buffer, i, j, positions)
                         for (gi, positions), (buffer, i, j) in zip(buckets, ranges)]
        self.fills = []
        for s in sorted(self.segments, key=lambda s: (id(s.buffer), s.i)):
            last = self.fills[-1] if self.fills else None
            if last is not None and last[0] is s.buffer and last[2] == s.i:
                self.fills[-1] = (s.buffer, last[1], s.j)
            else:
                self.fills.append((s.buffer, s.i, s.j))
        for segment in self.segments:
            for local, k in enumerate(segment.positions):
                for name, value in states[k].items():
                    view = segment.moment_view(name, local)
                    view[...] = xp(view).asarray(value, dtype=view.dtype)
                    states[k][name] = view

    @staticmethod
    def _range(params):
        slot = params[0].flat
        found = slot and slot[0].index_range(params)
        return (slot[0], *found) if found else None

    @property
    def valid(self):
        return all(s.buffer.valid for s in self.segments)
