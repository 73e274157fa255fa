"""Autoregressive language models: p(x_1 .. x_n) = prod_i p(x_i | x_<i).

    base.py       LanguageModel: data, loss, scoring, generation and checkpoints they share
    ngram.py      Bigram (a V x V table of logits) and MLPLM (Bengio et al. 2003)
    gpt.py        TransformerLM, a GPT after nanoGPT: pre-LayerNorm blocks of causal
                  self-attention (``nn.attention``) and an MLP, tied output embedding
    sampling.py   the decoding rules: temperature, top-k, top-p (nucleus)
"""
from .base import BETAS, CLIP_GRAD, MIN_LR, WARMUP, WEIGHT_DECAY, LanguageModel
from .gpt import INIT_STD, Block, CausalSelfAttention, TransformerLM
from .ngram import MLPLM, Bigram
from .sampling import check_sampling_args, next_token_probs, sample_next

__all__ = ["LanguageModel", "Bigram", "MLPLM", "TransformerLM", "Block", "CausalSelfAttention",
           "next_token_probs", "sample_next", "check_sampling_args", "BETAS", "CLIP_GRAD",
           "MIN_LR", "WARMUP", "WEIGHT_DECAY", "INIT_STD"]
