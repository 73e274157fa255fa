"""The denoisers' old import path: benchmarks/models_speed.py imports ``TinyUNet`` from here.
The code lives in ``minigen.models.diffusion.denoisers``."""
from .diffusion.denoisers import TimeMLP, TinyUNet, timestep_embedding  # noqa: F401
