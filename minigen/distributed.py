"""Data-parallel training over MPI: every rank holds a replica of the model, takes a
contiguous shard of each global batch, and the replicas stay identical because every rank
applies the same averaged gradient.

The training loop calls this module at a few points of a step:

    rank, size = world()                         # (0, 1) outside mpiexec: no MPI at all
    abort_on_error(); broadcast_parameters(model); broadcast_generators(stream_rng)
    batch = next(stream)                         # the global batch, from the seed alone
    lo, hi = shard_bounds(len(batch), rank, size)
    with sharded(lo, hi, len(batch)):            # per-example noise independent of size
        loss = model.loss(batch[lo:hi])
    loss.backward()
    average_gradients(params, hi - lo)           # one all-reduce per dtype
    value = allreduce_scalar(loss.item(), hi - lo)
    check_in_sync(model, step)                   # now and then: a checksum per rank

Exactness. With B = sum_r n_r rows in the global batch and each rank's loss the mean over
its n_r rows, the gradient of the global-batch mean loss is

    g = (1/B) sum_i grad l_i = sum_r n_r g_r / sum_r n_r,

which ``average_gradients`` computes with one Allreduce (Sergeev & Del Balso 2018, Horovod;
Li et al. 2020, PyTorch DDP). So N ranks take the steps one process takes on the same
global batch, up to the order of floating-point sums.

MPI is mpi4py over MPICH (both pip wheels, the ``dist`` extra), imported on the first
collective of a run launched with more than one rank. Whether a run was launched by mpiexec
is read from the environment the launcher's process manager sets (``PMI_SIZE``/``PMI_RANK``
for MPICH's Hydra and Slurm's PMI, ``OMPI_COMM_WORLD_SIZE``/``_RANK`` for Open MPI): a plain
``python`` run then never initialises MPI, which costs time and, as a singleton, may try to
start a process manager.

Faults, as measured with MPICH 5.0 under Hydra on one machine: a rank killed by a signal
makes mpiexec kill the others at once ("BAD TERMINATION OF ONE OF YOUR APPLICATION
PROCESSES", exit code of the signal); a rank that raises an uncaught exception waits in
MPI_Finalize while the others wait in their next collective, forever; so does a rank that
hangs. ``abort_on_error`` turns an uncaught exception into MPI_Abort, which ends every rank,
and every collective here runs under a watchdog that aborts the job when it waits longer
than ``set_timeout`` seconds (300 by default), naming the call and the rank.
"""
import contextlib
import os
import sys
import threading
import time
import zlib

import numpy as np

from . import _checks, backend
from .autograd import Tensor, no_grad
from .backend import per_example, sharded

__all__ = ["world", "abort_on_error", "set_timeout", "shard_bounds", "shard", "sharded",
           "per_example", "broadcast_parameters", "broadcast_generators", "average_gradients",
           "allreduce_mean", "allreduce_scalar", "check_in_sync"]

MISSING = "minigen.distributed needs mpi4py and MPICH: pip install -e '.[dist]'"
ABORT_GRACE = 0.5   # s between printing the error and MPI_Abort: the launcher forwards the
                    # ranks' output through pipes, and an abort can drop what is still in them
_LAUNCHERS = (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"))
_state = {"MPI": None, "timeout": 300.0, "hooked": False, "watchdog": None}


# --- the world ------------------------------------------------------------------------------
def _launched():
    """(rank, size) from the launcher's environment, or (0, 1) when there is none."""
    for size_key, rank_key in _LAUNCHERS:
        if size_key in os.environ:
            return int(os.environ.get(rank_key, 0)), int(os.environ[size_key])
    return 0, 1


def _mpi():
    """The mpi4py ``MPI`` module, imported once; a one-line error when it is missing."""
    if _state["MPI"] is None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError(MISSING) from None
        _state["MPI"] = MPI
    return _state["MPI"]


def world():
    """(rank, size) of this process: (0, 1) without a launcher (MPI is not imported), else
    MPI.COMM_WORLD's rank and size."""
    rank, size = _launched()
    if size == 1:
        return 0, 1
    comm = _mpi().COMM_WORLD
    return comm.Get_rank(), comm.Get_size()


def _abort(message):
    rank = _mpi().COMM_WORLD.Get_rank()
    sys.stderr.write(f"minigen.distributed: rank {rank}: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(ABORT_GRACE)
    _mpi().COMM_WORLD.Abort(1)


def abort_on_error():
    """Make an uncaught exception on this rank end the whole job: the traceback is printed,
    then MPI_Abort stops every rank (otherwise the others would wait forever). Does nothing
    in a single process; installing it twice installs it once."""
    if world()[1] == 1 or _state["hooked"]:
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        _abort(f"uncaught {kind.__name__}; aborting every rank")

    sys.excepthook, _state["hooked"] = hook, True


def set_timeout(seconds):
    """The longest one collective may wait for the other ranks before the job is aborted
    (None: wait forever)."""
    _state["timeout"] = _checks.positive(seconds, "seconds", "set_timeout", optional=True)


class _Watchdog:
    """One daemon thread that aborts the job when the guarded call outlives its deadline."""

    def __init__(self):
        self.cond, self.deadline, self.what = threading.Condition(), None, ""
        threading.Thread(target=self._watch, name="minigen-mpi-watchdog", daemon=True).start()

    def _watch(self):
        with self.cond:
            while True:
                left = None if self.deadline is None else self.deadline - time.monotonic()
                if left is not None and left <= 0:
                    _abort(f"{self.what} waited more than {_state['timeout']:g} s for the "
                           "other ranks (one of them is stuck or dead); aborting the job")
                    return
                self.cond.wait(left)

    @contextlib.contextmanager
    def guard(self, what):
        with self.cond:
            self.deadline, self.what = time.monotonic() + _state["timeout"], what
            self.cond.notify()
        try:
            yield
        finally:
            with self.cond:
                self.deadline = None


def _collective(what):
    """The communicator, inside a watchdog guard named ``what`` (when a timeout is set)."""
    if _state["timeout"] is None:
        return contextlib.nullcontext(_mpi().COMM_WORLD)
    if _state["watchdog"] is None:
        _state["watchdog"] = _Watchdog()

    @contextlib.contextmanager
    def guarded():
        with _state["watchdog"].guard(what):
            yield _mpi().COMM_WORLD
    return guarded()


# --- sharding and per-example noise ---------------------------------------------------------
def shard_bounds(n, rank, size):
    """[lo, hi) of rank ``rank``'s rows among n: lo = floor(n rank / size), hi = floor(n (rank +
    1) / size). Contiguous, covering, sizes differing by at most one (10 rows on 3 ranks:
    3, 3, 4); a rank may get no rows when n < size."""
    size = _checks.positive_int(size, "size", "shard_bounds")
    rank = _checks.integer(rank, "rank", "shard_bounds", low=0, high=size - 1)
    n = _checks.integer(n, "n", "shard_bounds", low=0)
    return n * rank // size, n * (rank + 1) // size


def shard(batch, rank=None, size=None):
    """This rank's contiguous rows of a global batch (an array, or a tuple of arrays sharing
    the first axis, returned in the same form); rank and size default to ``world()``."""
    if rank is None or size is None:
        rank, size = world()
    arrays = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"shard: the arrays of the batch have different lengths "
                         f"{[len(a) for a in arrays]}")
    lo, hi = shard_bounds(n, rank, size)
    out = tuple(a[lo:hi] for a in arrays)
    return out if isinstance(batch, (tuple, list)) else out[0]


# --- collectives ----------------------------------------------------------------------------
def _by_dtype(arrays):
    """dtype -> [(index, array)], in first-seen order (the same on every rank)."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(np.dtype(a.dtype), []).append((i, a))
    return groups


def broadcast_parameters(module, root=0):
    """Copy rank ``root``'s parameters, buffers and module-held NumPy Generators' states to
    every rank: one Bcast per dtype over a flat buffer, and one bcast of the states."""
    if world()[1] == 1:
        return
    targets = [p.data for p in module.parameters()] + [b for _, b in module.named_buffers()]
    for dtype, members in _by_dtype(targets).items():
        flat = np.concatenate([backend.to_device(a, "cpu").ravel() for _, a in members])
        with _collective("broadcast_parameters") as comm:
            comm.Bcast(flat, root=root)
        offset = 0
        with no_grad():
            for _, a in members:
                a[...] = backend.to_device(flat[offset:offset + a.size].reshape(a.shape),
                                           backend.device_of(a))
                offset += a.size
    for p in module.parameters():
        p._version += 1
    generators = [v for m in module.modules() for v in vars(m).values()
                  if isinstance(v, np.random.Generator)]
    broadcast_generators(*generators, root=root)


def broadcast_generators(*generators, root=0):
    """Set every given NumPy Generator to rank ``root``'s state (one bcast of all states), so
    every rank draws the same batch order and noise."""
    if world()[1] == 1 or not generators:
        return
    with _collective("broadcast_generators") as comm:
        states = comm.bcast([g.bit_generator.state for g in generators], root=root)
    for g, state in zip(generators, states):
        g.bit_generator.state = state


def average_gradients(params, count):
    """Replace each parameter's gradient by sum_r n_r g_r / sum_r n_r over the ranks r, where
    n_r is the ``count`` of rows rank r's loss averaged over: the gradient of the global-batch
    mean loss, exactly, for even and uneven shards. Returns B = sum_r n_r.

    One Allreduce (SUM) per dtype over a flat buffer [n_r g_r for every parameter, n_r, one
    has-gradient flag per parameter]: a rank with no rows (count 0) or a parameter with no
    gradient contributes zeros, and a parameter keeps grad None only when no rank has one.
    CuPy gradients travel through host copies."""
    params = list(params)
    count = _checks.integer(count, "count", "average_gradients", low=0)
    if world()[1] == 1:
        return count
    total = None
    for dtype, members in _by_dtype([p.data for p in params]).items():
        sizes = [a.size for _, a in members]
        n = sum(sizes)
        flat = np.zeros(n + 1 + len(members), dtype)
        offset = 0
        for k, (i, a) in enumerate(members):
            grad = params[i].grad
            if count and grad is not None:
                np.multiply(backend.to_device(grad.data, "cpu").ravel(), count,
                            out=flat[offset:offset + a.size])
                flat[n + 1 + k] = 1
            offset += a.size
        flat[n] = count
        with _collective("average_gradients") as comm:
            comm.Allreduce(_mpi().IN_PLACE, flat, op=_mpi().SUM)
        total = int(flat[n])
        if total == 0:
            raise ValueError("average_gradients: every rank passed count=0; the global batch "
                             "has no rows")
        flat[:n] /= flat[n]
        offset = 0
        for k, (i, a) in enumerate(members):
            if flat[n + 1 + k]:
                mean = backend.to_device(flat[offset:offset + a.size].reshape(a.shape),
                                         backend.device_of(a))
                p = params[i]
                if p.grad is None:
                    p.grad = Tensor(mean.copy())
                else:
                    p.grad.data[...] = mean
            offset += a.size
    return count if total is None else total


def allreduce_mean(values, weight=1.0):
    """sum_r w_r v_r / sum_r w_r over the ranks for each entry of ``values`` (a sequence of
    numbers), in one Allreduce of len(values) + 1 float64s: the same numbers on every rank, for
    losses, validation metrics and stop decisions. A NaN or inf on any rank with w_r > 0
    reaches every rank; a rank with w_r = 0 contributes nothing."""
    weight = _checks.real(weight, "weight", "allreduce_mean", low=0)
    values = np.asarray(values, dtype=np.float64).ravel()
    if world()[1] == 1:
        return values
    buffer = np.append(weight * values if weight else np.zeros_like(values), weight)
    with _collective("allreduce_mean") as comm:
        comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
    if buffer[-1] == 0:
        raise ValueError("allreduce_mean: every rank passed weight=0")
    return buffer[:-1] / buffer[-1]


def allreduce_scalar(value, weight=1.0):
    """``allreduce_mean`` of one number: sum_r w_r v_r / sum_r w_r, as a float."""
    weight = _checks.real(weight, "weight", "allreduce_scalar", low=0)
    return float(allreduce_mean([float(value)], weight)[0])


def check_in_sync(params, step):
    """Raise RuntimeError naming ``step`` and the first differing parameter unless every rank
    holds bit-identical parameters: one CRC-32 per parameter, compared through one Allgather.
    ``params`` is a Module (names come from it) or an iterable of Tensors."""
    named = list(params.named_parameters()) if hasattr(params, "named_parameters") else \
        [(f"parameter {i}", p) for i, p in enumerate(params)]
    rank, size = world()
    if size == 1:
        return
    sums = np.array([zlib.crc32(np.ascontiguousarray(backend.to_device(p.data, "cpu")))
                     for _, p in named], dtype=np.uint32)
    every = np.empty((size, len(sums)), np.uint32)
    with _collective("check_in_sync") as comm:
        comm.Allgather(sums, every)
    for r in range(1, size):
        differ = np.flatnonzero(every[r] != every[0])
        if differ.size:
            raise RuntimeError(f"check_in_sync: the replicas diverged at step {step}: "
                               f"{named[differ[0]][0]} differs between rank 0 and rank {r} "
                               f"({differ.size} of {len(named)} parameters differ)")
