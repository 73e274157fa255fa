"""Deep generative models, one file per family; each follows the distribution protocol
(fit -> self, sample(n, rng=None), log_prob/score_samples/score where bounded)."""
from .ddpm import DDPM, NoiseSchedule
from .denoisers import TimeMLP, TinyUNet, timestep_embedding
from .gan import GAN, WGANGP

__all__ = ["DDPM", "GAN", "WGANGP", "NoiseSchedule", "TimeMLP", "TinyUNet", "timestep_embedding"]

from .ae import AutoEncoder, SupervisedAutoEncoder
from .hvae import HierarchicalVAE
from .networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .swae import SWAE
from .vae import VAE

__all__ += ["AutoEncoder", "SupervisedAutoEncoder", "SWAE", "VAE", "HierarchicalVAE",
            "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder"]

from .lm import MLPLM, Bigram, LanguageModel, TransformerLM

__all__ += ["LanguageModel", "Bigram", "MLPLM", "TransformerLM"]
