"""Deep generative models, one file (or package) per family; each follows the distribution
protocol (fit -> self, sample(n, rng=None), log_prob/score_samples/score where bounded)."""
from .ae import AutoEncoder, SupervisedAutoEncoder
from .diffusion import DDPM, NoiseSchedule, TimeMLP, TinyUNet, timestep_embedding
from .gan import GAN, WGANGP
from .hvae import HierarchicalVAE
from .lm import MLPLM, Bigram, LanguageModel, TransformerLM
from .networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .swae import SWAE
from .vae import VAE

__all__ = ["AutoEncoder", "SupervisedAutoEncoder", "SWAE", "VAE", "HierarchicalVAE", "GAN",
           "WGANGP", "DDPM", "NoiseSchedule", "TimeMLP", "TinyUNet", "timestep_embedding",
           "LanguageModel", "Bigram", "MLPLM", "TransformerLM", "MLPEncoder", "MLPDecoder",
           "ConvEncoder", "ConvDecoder"]
