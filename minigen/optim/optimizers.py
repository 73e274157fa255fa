"""SGD, Adam and AdamW with parameter groups and gradient clipping, each with ``state_dict`` /
``load_state_dict`` (flat name -> array dicts that ``minigen.io.save`` writes as they are).

Parameter groups follow ``torch.optim``: ``params`` is an iterable of Tensors, or of dicts
``{"params": [...], "lr": ..., ...}`` whose keys override the constructor's defaults for that
group (e.g. no weight decay on biases). Schedules set every group's lr. Updates run on raw
arrays in place (no graph).

By default (``flat=True``) an optimizer lays its ``nn.Parameter``s out as views into one
buffer per dtype and device, group after group (``nn.flat``), so a group's update is one
``kernels.optimizer`` call over all its parameters, ``zero_grad`` drops the gradients without
a fill, ``clip_grad_norm_`` takes one norm, and backward writes each ``Linear``'s gradients
straight into the buffer (no copy). ``flat=False`` updates each parameter on its own. On the
reference path the flat update does the per-parameter one's operations in the same order:
float64 trajectories agree to the last bit. Tensors that are not Parameters are updated one
by one. ``state_dict`` / ``load_state_dict`` are the same on both paths.
"""
import math

import numpy as np

from .._checks import integer, positive, positive_int, real
from ..autograd import no_grad
from ..backend import xp
from ..kernels import optimizer as kernels
from ..nn.flat import GroupLayout, grad_spans


class Optimizer:
    """Base: ``param_groups`` (dicts with "params" and the hyper-parameters), per-parameter
    ``state`` (a list aligned with ``params``, the parameters of every group in order) and
    ``step_count``. Subclasses define ``_check(group)``, ``_update(p, g, state, group)`` (one
    parameter), ``_flat_update(p, g, moment, group, first)`` (a stretch of a flat buffer;
    ``moment(name)`` is the state array over it), ``_moments(group)`` (the state's names) and
    ``_first_key(state)`` (members whose keys differ take separate calls)."""

    def __init__(self, params, defaults, flat=True):
        where = type(self).__name__
        params = list(params)
        if not params:
            raise ValueError(f"{where}: got an empty parameter list")
        if not isinstance(flat, bool):
            raise ValueError(f"{where}: flat must be True or False, got {flat!r}")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups, self._states = [], []
        for group in groups:
            self.add_param_group(group)
        self.step_count = 0
        self.flat = flat
        self._layout = None
        if flat:
            self._flat_layout()

    def add_param_group(self, group):
        """Add ``{"params": [...], **hyper-parameters}``; missing keys take the defaults."""
        where = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{where}: a parameter group must be a dict with a 'params' key, "
                            f"got {type(group).__name__}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{where}: unknown hyper-parameter(s) {sorted(unknown)} in a "
                             f"parameter group; valid ones are {sorted(self.defaults)}")
        group = {**self.defaults, **group, "params": list(group["params"])}
        group.update({k: tuple(v) for k, v in group.items() if isinstance(v, list)
                      and k != "params"})
        if not group["params"]:
            raise ValueError(f"{where}: got an empty parameter list")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]) \
                or len({id(p) for p in group["params"]}) < len(group["params"]):
            raise ValueError(f"{where}: a parameter appears more than once (in one group or "
                             "across groups)")
        self._check(group)
        self.param_groups.append(group)
        self._states.extend({} for _ in group["params"])
        self._layout = None

    @property
    def params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def state(self):
        """Per-parameter state (dicts of arrays), aligned with ``params``."""
        return self._states

    @property
    def lr(self):
        """The first group's learning rate; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = value

    def zero_grad(self):
        """Every gradient to None (on the flat path without a fill: see ``FlatBuffer.unset``)."""
        if not self.flat:
            for p in self.params:
                p.grad = None
            return
        layout = self._flat_layout()
        for buffer, i, j in layout.fills:
            buffer.zero_grad(i, j)
        params = self.params
        for k in layout.loose:
            params[k].grad = None

    def step(self):
        self.step_count += 1
        params = self.params
        with no_grad():
            if self.flat:
                layout = self._flat_layout()
                for segment in layout.segments:
                    self._step_segment(segment, params)
                loose = layout.loose
            else:
                loose = range(len(params))
            groups = [g for g in self.param_groups for _ in g["params"]]
            for k in loose:
                p = params[k]
                if p.grad is not None:
                    self._update(p.data, p.grad.data, self._states[k], groups[k])
                    p._version += 1

    def _flat_layout(self):
        """The groups' layout, laid out afresh (the state moved in) once a member left it."""
        if self._layout is None or not self._layout.valid:
            self._layout = GroupLayout([g["params"] for g in self.param_groups], self._states)
        return self._layout

    def _step_segment(self, segment, params):
        """One update call per stretch of members with gradients and equal ``_first_key``:
        one call for the whole segment in a normal step."""
        group = self.param_groups[segment.group]
        states = [self._states[k] for k in segment.positions]
        for a, b, key, p, g, moment in segment.stretches([self._first_key(s) for s in states]):
            self._flat_update(p, g, moment, group, key)
            for m in range(a, b):
                if not states[m]:
                    states[m].update((name, segment.moment_view(name, m))
                                     for name in self._moments(group))
                params[segment.positions[m]]._version += 1

    def _first_key(self, state):
        return None

    # --- state --------------------------------------------------------------------------
    def state_dict(self):
        """Flat dict: ``step_count``, ``group.G.size`` and ``group.G.<hyper-parameter>`` for
        every group, ``state.I.<name>`` arrays for parameter I (in ``params`` order)."""
        flat = {"step_count": np.array(self.step_count)}
        for gi, group in enumerate(self.param_groups):
            flat[f"group.{gi}.size"] = np.array(len(group["params"]))
            for k in self.defaults:
                flat[f"group.{gi}.{k}"] = np.array(group[k])
        for i, state in enumerate(self.state):
            for k, v in state.items():
                flat[f"state.{i}.{k}"] = v.copy()
        return flat

    def load_state_dict(self, flat):
        """Restore ``state_dict()``: everything is checked (group count and sizes, state
        shapes) and converted before anything is assigned."""
        where = f"{type(self).__name__}.load_state_dict"
        sizes = [len(g["params"]) for g in self.param_groups]
        saved = []
        while f"group.{len(saved)}.size" in flat:
            saved.append(int(flat[f"group.{len(saved)}.size"]))
        if saved != sizes or "step_count" not in flat:
            raise ValueError(f"{where}: the state has parameter groups of sizes {saved}, this "
                             f"optimiser {sizes}")
        groups = []
        for gi, group in enumerate(self.param_groups):
            new = dict(group)
            for k, default in self.defaults.items():
                if f"group.{gi}.{k}" not in flat:
                    raise ValueError(f"{where}: the state lacks group.{gi}.{k}")
                v = np.asarray(flat[f"group.{gi}.{k}"])
                new[k] = tuple(v.tolist()) if v.ndim else v.item()
            self._check(new)
            groups.append(new)
        params, states = self.params, [dict() for _ in self.params]
        for key, v in flat.items():
            if not key.startswith("state."):
                continue
            i, _, name = key[len("state."):].partition(".")
            if not i.isdigit() or int(i) >= len(params):
                raise ValueError(f"{where}: {key!r} names no parameter of this optimiser")
            p = params[int(i)]
            if np.shape(v) != p.shape:
                raise ValueError(f"{where}: {key} has shape {np.shape(v)}, parameter {i} has "
                                 f"{p.shape}")
            states[int(i)][name] = xp(p.data).asarray(v, dtype=p.dtype).copy()
        self.param_groups, self._states = groups, states
        self.step_count = int(flat["step_count"])
        if self.flat:
            self._layout = None         # fresh moment buffers, the loaded state copied in


class SGD(Optimizer):
    """v <- momentum v + g (+ weight_decay p); p <- p - lr v
    (Nesterov: p <- p - lr (g + momentum v)); Sutskever et al. 2013, as torch.optim.SGD."""

    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0,
                 flat=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay), flat)

    def _check(self, group):
        positive(group["lr"], "lr", "SGD")
        real(group["momentum"], "momentum", "SGD", low=0)
        real(group["weight_decay"], "weight_decay", "SGD", low=0)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")

    def _update(self, p, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        momentum = group["momentum"]
        if momentum:
            if "v" not in state:
                state["v"] = g.copy()
            else:
                v = state["v"]
                v *= momentum
                v += g
            g = g + momentum * state["v"] if group["nesterov"] else state["v"]
        p -= group["lr"] * g

    def _first_key(self, state):
        return "v" not in state

    def _moments(self, group):
        return ("v",) if group["momentum"] else ()

    def _flat_update(self, p, g, moment, group, first):
        momentum = group["momentum"]
        kernels.sgd_step(p, g, moment("v") if momentum else g, group["lr"], momentum,
                         group["weight_decay"], group["nesterov"], first)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr m_hat / (sqrt(v_hat) + eps), m_hat = m/(1-b1^t), v_hat = v/(1-b2^t).
    ``weight_decay`` adds weight_decay * p to g (L2, coupled)."""
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 flat=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
                         flat)
        self._buffers = {}   # scratch space of the update, one array per (dtype, array type)

    def _check(self, group):
        where = type(self).__name__
        positive(group["lr"], "lr", where)
        betas = group["betas"]
        if not isinstance(betas, tuple) or len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        for name, b in zip(("betas[0]", "betas[1]"), betas):
            real(b, name, where, low=0, high=1, high_open=True)
        positive(group["eps"], "eps", where)
        real(group["weight_decay"], "weight_decay", where, low=0)

    def _update(self, p, g, state, group):
        b1, b2 = group["betas"]
        lr = group["lr"]
        if group["weight_decay"]:
            if self.decoupled:
                p *= 1 - lr * group["weight_decay"]
            else:
                g = g + group["weight_decay"] * p
        if "m" not in state:
            state["m"], state["v"] = xp(p).zeros_like(p), xp(p).zeros_like(p)
        m, v, t, mod = state["m"], state["v"], self.step_count, xp(p)
        tmp = self._scratch(p)          # every pass below writes in place: no fresh arrays
        mod.subtract(g, m, out=tmp)     # m <- m + (1 - b1) (g - m)   (torch's lerp)
        tmp *= 1 - b1
        m += tmp
        v *= b2                         # v <- b2 v + (1 - b2) g^2
        mod.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        mod.sqrt(v, out=tmp)            # p <- p - lr/(1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)
        tmp *= 1 / math.sqrt(1 - b2 ** t)
        tmp += group["eps"]
        mod.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        p -= tmp

    def _moments(self, group):
        return ("m", "v")

    def _flat_update(self, p, g, moment, group, first):
        b1, b2 = group["betas"]
        kernels.adam_step(p, g, moment("m"), moment("v"), self.step_count, group["lr"], b1, b2,
                          group["eps"], group["weight_decay"], self.decoupled)

    def _scratch(self, p):
        """A buffer shaped like ``p``: a view into one array per dtype and array type, kept
        between steps, so no step allocates (and page-faults) fresh multi-MB temporaries."""
        key = (p.dtype, type(p))
        buf = self._buffers.get(key)
        if buf is None or buf.size < p.size:
            buf = self._buffers[key] = xp(p).empty(p.size, p.dtype)
        return buf[:p.size].reshape(p.shape)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p <- p (1 - lr wd) first."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 flat=True):
        super().__init__(params, lr, betas, eps, weight_decay, flat)


def clip_grad_norm_(params, max_norm):
    """Scale all gradients by max_norm / (norm + 1e-6) when their global L2 norm
    sqrt(sum_i |g_i|^2) exceeds ``max_norm`` (> 0); return the norm (as
    ``torch.nn.utils.clip_grad_norm_``; ``max_norm=math.inf`` only measures it). The norm is accumulated in float64, so float32
    gradients of 1e19 do not overflow; a non-finite norm is returned with the gradients left
    unchanged (``train`` then stops and names the step). Parameters that are consecutive
    members of a flat buffer are measured and scaled as one stretch of it."""
    if max_norm != math.inf:
        positive(max_norm, "max_norm", "clip_grad_norm_")
    spans, rest = grad_spans(list(params))
    grads = spans + [p.grad.data for p in rest if p.grad is not None]
    if not grads:
        return 0.0
    total = 0.0
    for g in grads:
        g64 = g.astype(np.float64, copy=False).ravel()
        total += float(g64 @ g64)
    total = math.sqrt(total)
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total
