"""Differentiable operations, grouped by kind; ``minigen.functional`` is their public face.

Files: ``math`` (arithmetic, unary functions, selection, matmul), ``activations``, ``shape``,
``reduce``, ``nn`` (softmax, conv, pooling, dropout, embedding), ``norm``, ``losses``, and
``_promote`` (PyTorch's dtype promotion, shared by the elementwise ops).

Primitives: one Function each, whose backward is written in primitives, so every order of
derivative follows from the chain rule: add, sub, mul, div, pow, neg, exp, log, sqrt, abs,
sin, cos, tanh, erf, sigmoid, softplus, relu, leaky_relu, where, maximum, minimum, clip,
matmul; reshape, permute, concatenate, split, getitem, pad, cumsum; sum, prod, max; conv2d
and conv_transpose2d (Conv2d, ConvInputGrad, ConvWeightGrad: each is another's gradient).

Composites: written in the primitives, nothing of their own to differentiate: mean, var, std,
min, logsumexp, max_pool2d, avg_pool2d, upsample_nearest, dropout, embedding, one_hot, and
the losses other than cross_entropy.

Fused for speed: one Function doing the work of several primitives in one pass, with an
explicit backward (a ``...Backward`` or ``...Grad`` Function, itself differentiable) so it
differentiates again; each equals its composite reference, written in the primitives:

    linear(x, W, b)         x @ W.T + b
    silu(a)                 a * sigmoid(a)
    gelu(a)                 0.5 * a * (1 + erf(a / sqrt(2)))
    gelu(a, 'tanh')         0.5 * a * (1 + tanh(sqrt(2/pi) * (a + 0.044715 * a**3)))
    softmax(z, axis)        exp(z - logsumexp(z, axis))
    log_softmax(z, axis)    z - logsumexp(z, axis)
    cross_entropy(z, t)     logsumexp(z, -1) - z[..., t], averaged
    bias_act(x, b, kind)    act(x + b), act one of relu, silu, gelu, gelu_tanh
    linear_act(x, W, b, k)  act(x @ W.T + b): one GEMM, then bias_act
    masked_softmax(z, m)    softmax(where(m, -inf, z)); masked entries are exactly 0
    layer_norm, group_norm  (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, per group
    group_norm_act(x, G, w, b, eps, shift, kind)
                            act(group_norm(x, G, w, b, eps) + shift[:, :, None, None])
"""
