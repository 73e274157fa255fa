"""Which steps update the generator: with n_critic critic updates per generator update, the
generator is updated on steps 1, 1 + n_critic, 1 + 2 n_critic, ..., so every run trains it at
least once."""
import numpy as np
import pytest

from minigen.models import GAN, WGANGP


def counting(cls):
    """``cls`` whose optimisers record, for every generator update, how many discriminator
    updates had been made by then (the step number, as the critic updates first)."""
    class Counting(cls):
        def configure_optimizers(self, lr):
            optimizers = super().configure_optimizers(lr)
            self.critic_updates, self.generator_updates = 0, []
            critic_step, generator_step = (optimizers["discriminator"].step,
                                           optimizers["generator"].step)

            def count_critic():
                self.critic_updates += 1
                critic_step()

            def count_generator():
                self.generator_updates.append(self.critic_updates)
                generator_step()
            optimizers["discriminator"].step = count_critic
            optimizers["generator"].step = count_generator
            return optimizers
    return Counting


@pytest.mark.parametrize("cls, n_critic, steps, expected", [
    (WGANGP, 5, 12, [1, 6, 11]),
    (WGANGP, 5, 3, [1]),
    (WGANGP, 5, 1, [1]),
    (WGANGP, 2, 5, [1, 3, 5]),
    (GAN, None, 4, [1, 2, 3, 4]),
])
def test_generator_updates_on_steps_one_plus_multiples_of_n_critic(cls, n_critic, steps,
                                                                   expected):
    model = counting(cls).mlp(2, z_dim=2, hidden=(4,), n_critic=n_critic, rng=0)
    X = np.random.default_rng(0).normal(size=(32, 2))
    before = [p.numpy().copy() for p in model.generator.parameters()]
    model.fit(X, steps=steps, batch_size=16, rng=0, ema_decay=None)
    assert model.critic_updates == steps
    assert model.generator_updates == expected
    assert all(not np.array_equal(b, p.numpy())
               for b, p in zip(before, model.generator.parameters()))
