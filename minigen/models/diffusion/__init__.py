"""Denoising diffusion: the noise schedule (``schedule``), the DDPM model with its DDPM and
DDIM samplers and likelihood bound (``ddpm``), and the denoiser networks (``denoisers``)."""
from .ddpm import DDPM
from .denoisers import TimeMLP, TinyUNet, timestep_embedding
from .schedule import NoiseSchedule

__all__ = ["DDPM", "NoiseSchedule", "TimeMLP", "TinyUNet", "timestep_embedding"]
