"""The training loop's view of the ranks it runs on: one process, or a data-parallel job under
``mpiexec -n N`` (``minigen.distributed``).

Every rank takes the contiguous shard ``shard_bounds(B, rank, N)`` of each global batch of B
rows and weights its mean loss by w_r, the number of terms that mean averages over
(``model.loss_weight(batch)`` where the model defines it, e.g. a language model's target
tokens; else the rows). The gradient every rank applies is then

    g = sum_r w_r g_r / sum_r w_r,

the gradient of the global batch's mean loss, and every scalar the loop decides on (the
losses, the validation, the interrupt flag) is the same w-weighted mean on every rank, so all
ranks take the same steps and stop at the same one. In one process nothing here imports MPI
and every method is the identity.
"""
import contextlib

from .. import backend
from .. import distributed as dist
from .._checks import integer
from .checkpoint import generators


def rows(batch):
    """The number of rows of a batch (an array, or a tuple of arrays sharing the first axis)."""
    return len(batch[0] if isinstance(batch, (tuple, list)) else batch)


def loss_weight(model, batch):
    """w for ``model.loss(batch)``: ``model.loss_weight(batch)`` (an int >= 0) where defined,
    else the rows."""
    weigh = getattr(model, "loss_weight", None)
    if not callable(weigh):
        return rows(batch)
    return integer(weigh(batch), "loss_weight(batch)", f"train: {type(model).__name__}", low=0)


class Ranks:
    """rank and size of the run (0 and 1 without a launcher), and the collectives of a step."""

    def __init__(self):
        self.rank, self.size = dist.world()

    @property
    def writer(self):
        """Whether this rank writes files (rank 0)."""
        return self.rank == 0

    def start(self, model, batch_size, stream_rng):
        """Make every rank start from rank 0's parameters, buffers and generators (the batch
        order's, the model's and minigen's default one); an uncaught error on any rank then
        ends the job. Every rank needs a row of each batch: batch_size >= size."""
        if self.size == 1:
            return
        if batch_size < self.size:
            raise ValueError(f"train: batch_size {batch_size} is smaller than the {self.size} "
                             "ranks; every rank needs at least one row of each batch")
        dist.abort_on_error()
        dist.broadcast_parameters(model)
        dist.broadcast_generators(stream_rng, backend.default_rng("cpu"))

    @contextlib.contextmanager
    def shard(self, batch):
        """Yield this rank's rows of the global batch, inside ``sharded`` so that per-example
        noise is drawn as for the whole batch."""
        if self.size == 1:
            yield batch
            return
        n = rows(batch)
        lo, hi = dist.shard_bounds(n, self.rank, self.size)
        with backend.sharded(lo, hi, n):
            yield dist.shard(batch, self.rank, self.size)

    def average_gradients(self, params, weight):
        """Every gradient replaced by the w-weighted mean over the ranks (one Allreduce)."""
        if self.size > 1:
            dist.average_gradients(params, weight)

    def mean(self, values, weight):
        """The w-weighted means over the ranks of a list of numbers (the list itself in one
        process)."""
        if self.size == 1:
            return list(values)
        return dist.allreduce_mean(values, weight).tolist()

    def any(self, flag):
        """Whether ``flag`` is true on any rank."""
        return bool(flag) if self.size == 1 else dist.allreduce_scalar(float(bool(flag))) > 0

    def check_in_sync(self, model, step):
        dist.check_in_sync(model, step)

    def resync_generators(self, model):
        """Set the model's generators to the last rank's: after a validation in which some
        rank held no rows of a batch (and so drew none of its noise), the last rank, which
        holds rows of every batch, has drawn what one process draws."""
        if self.size > 1:
            dist.broadcast_generators(*(g for _, g in generators(model)),
                                      root=self.size - 1)


class AveragingOptimizer:
    """An optimiser whose ``step`` first averages its parameters' gradients over the ranks
    (with the loss weight of the current shard): what a model's ``train_step`` receives, so
    each of its updates (a GAN's discriminator and generator) applies the global gradient."""

    def __init__(self, optimizer, ranks):
        self.optimizer, self.ranks, self.weight = optimizer, ranks, None

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self):
        self.ranks.average_gradients(self.optimizer.params, self.weight)
        return self.optimizer.step()
