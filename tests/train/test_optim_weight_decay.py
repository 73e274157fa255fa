"""Weight decay by its effect on the weights, not by the group settings: with zero gradients
Adam's step is m_hat / (sqrt(v_hat) + eps) = 0, so an AdamW step moves a parameter by exactly
its decoupled decay, p <- p (1 - lr wd), and leaves undecayed ones untouched."""
import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim


def _step_with_zero_gradients(params, opt):
    for p in params:
        p.grad = mg.tensor(np.zeros(p.shape, dtype=p.dtype))
    opt.step()


def test_adamw_decays_by_exactly_lr_times_wd():
    net = nn.Linear(4, 3, rng=0).double()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    opt = optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.3)
    _step_with_zero_gradients(list(net.parameters()), opt)
    for k, v in before.items():
        np.testing.assert_allclose(net.state_dict()[k], v * (1 - 0.1 * 0.3), rtol=1e-15)


def test_adam_l2_decay_is_not_decoupled():
    """Adam's weight_decay enters the gradient (g + wd p), so Adam's first step moves each
    nonzero weight by lr sign(p) (up to eps), not by lr wd p."""
    net = nn.Linear(4, 3, rng=0).double()
    w = net.weight.numpy().copy()
    opt = optim.Adam(net.parameters(), lr=0.01, weight_decay=0.3, eps=1e-12)
    _step_with_zero_gradients(list(net.parameters()), opt)
    np.testing.assert_allclose(net.weight.numpy(), w - 0.01 * np.sign(w), rtol=1e-9)


def test_the_language_model_decays_matrices_only():
    """TransformerLM's optimiser: matrices and embeddings shrink by lr * wd * w in one step;
    biases and layer-norm weights do not move."""
    from minigen.models import TransformerLM
    model = TransformerLM(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, rng=0)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    lr = 0.05
    opt = model.configure_optimizers(lr)
    wd = max(g["weight_decay"] for g in opt.param_groups)
    assert wd > 0
    _step_with_zero_gradients(list(model.parameters()), opt)
    matrices = [n for n, v in before.items() if v.ndim >= 2]
    vectors = [n for n, v in before.items() if v.ndim < 2]
    assert matrices and any("ln" in n or "norm" in n for n in vectors)
    after = dict(model.named_parameters())
    for n in matrices:
        # float32: one rounding of p * (1 - lr wd), so 2 ulp (1.2e-7 each) is ample
        np.testing.assert_allclose(after[n].numpy(), before[n] * np.float32(1 - lr * wd),
                                   rtol=2.5e-7, err_msg=n)
    for n in vectors:
        np.testing.assert_array_equal(after[n].numpy(), before[n], err_msg=n)
    assert pytest.approx(lr) == opt.lr
