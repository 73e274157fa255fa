"""The one training loop for every deep model (``loop``), its checkpoints with exact resume
(``checkpoint``) and its progress line and Ctrl-C handling (``progress``)."""
from .checkpoint import Checkpoint, load_checkpoint
from .loop import TrainingInterrupted, TrainResult, train

__all__ = ["train", "TrainResult", "TrainingInterrupted", "Checkpoint", "load_checkpoint"]
