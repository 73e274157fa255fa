"""The one training loop for every deep model (``loop``), its checkpoints with exact resume
(``checkpoint``) and its progress line and Ctrl-C handling (``progress``).
``keep_freed_memory`` is what ``train`` wraps its steps in, for a hand-written loop."""
from .._alloc import keep_freed_memory
from .checkpoint import Checkpoint, load_checkpoint
from .loop import TrainingInterrupted, TrainResult, train

__all__ = ["train", "TrainResult", "TrainingInterrupted", "Checkpoint", "load_checkpoint",
           "keep_freed_memory"]
