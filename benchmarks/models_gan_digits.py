"""The conv GAN on the 8x8 digits at a real budget: minigen next to the same GAN in PyTorch,
with the VAE on the same pixels as the reference.

    python benchmarks/models_gan_digits.py [--steps 8000] [--lr 2e-4] [--seeds 0 1 2]
        [--parts gan torch vae] [--vae-steps 3000] [--figure PATH] [--quick]
    python benchmarks/models_gan_digits.py --speed-only [--rounds 3]

Data: the 8x8 digits scaled to [0, 1] (``load_digits('train'|'test') / 16``, the seed-0 split:
1,437 training and 360 held-out images), as in ``minigen demo``.

Models (each seed seeds the weights, the batch order and the noise):
  * gan: ``GAN.conv(image_shape=(1, 8, 8), z_dim=16, channels=(32, 64))``, the demo's network
    (generator: Linear 16 -> 64x2x2, ReLU, ConvTranspose 4x4/2 to 32 channels, ReLU,
    ConvTranspose 4x4/2 to 1; discriminator: Conv 3x3/2 to 32, LeakyReLU(0.01), Conv 3x3/2 to
    64, LeakyReLU, Linear 256 -> 1), the non-saturating loss, one generator update per
    discriminator update, Adam (``--lr``, betas (0.5, 0.999)), batch 128, samples from the
    generator's weights averaged with decay 0.999 (EMA with warm-up);
  * torch: the same GAN in PyTorch (layers, PyTorch's default initialisation, which minigen's
    layers copy, losses, update order, optimiser, EMA, budget), run in its own process, single
    threaded; its random streams differ from minigen's, so compare the seed spreads;
  * vae: ``VAE(64, 16)`` (MLP (256, 256), Bernoulli likelihood on the [0, 1] pixels, Adam lr
    1e-3, batch 128, ``--vae-steps``), sampled two ways: the decoded means (pixel
    probabilities, images on the GAN's scale) and Bernoulli draws from them.

Metrics, printed as Markdown rows per seed:
  * SW: ``minigen.metrics.sliced_wasserstein`` (256 projections, rng 0) between 360 samples
    (``sample(360, rng=0)``) and the 360 held-out digits: the demo's number. The floor is the
    same distance from 360 training digits (four disjoint sets of them: mean and range);
  * classes: a logistic regression fitted to the training digits (scikit-learn; its held-out
    accuracy is printed) labels 1,000 samples, clipped to [0, 1]: the smallest and largest
    share of a class (a collapsed generator leaves classes out) and the share labelled with
    probability >= 0.9 (an ambiguous sample is labelled with less confidence), next to the same
    numbers for the held-out digits;
  * seconds of training (under whatever load the machine carried; not a timing benchmark).

``--speed-only``: milliseconds per training step (one discriminator and one generator update)
of the minigen GAN and the PyTorch twin, both single-threaded, each round a 300-step fit of
each in turn (PyTorch in its own process; minigen after a 20-step warm-up fit that compiles
its kernels): median and range over the rounds, and the ratio of the medians.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if __name__ == "__main__":       # single-threaded, as PyTorch's worker (not when imported)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine  # noqa: E402

Z_DIM, CHANNELS, BATCH, BETAS, EMA_DECAY = 16, (32, 64), 128, (0.5, 0.999), 0.999
N_SW, N_CLASSES = 360, 1000


def digits():
    from minigen.data import load_digits
    (Xtr, ytr), (Xte, yte) = load_digits("train"), load_digits("test")
    return Xtr / 16.0, ytr, Xte / 16.0, yte


# --- minigen ------------------------------------------------------------------------------
def minigen_gan(Xtr, steps, lr, seed):
    from minigen import manual_seed
    from minigen.models import GAN
    manual_seed(seed)
    model = GAN.conv(image_shape=(1, 8, 8), z_dim=Z_DIM, channels=CHANNELS, rng=seed)
    start = time.perf_counter()
    model.fit(Xtr, steps=steps, batch_size=BATCH, lr=lr, ema_decay=EMA_DECAY, rng=seed)
    return model.sample, time.perf_counter() - start


def minigen_vae(Xtr, steps, seed):
    from minigen import manual_seed
    from minigen.models import VAE
    manual_seed(seed)
    model = VAE(64, Z_DIM, rng=seed)
    start = time.perf_counter()
    model.fit(Xtr, steps=steps, batch_size=BATCH, lr=1e-3, rng=seed)
    return model, time.perf_counter() - start


# --- PyTorch: the same GAN, run with --torch-worker in its own process --------------------
def torch_networks():
    """The PyTorch twins of ``GAN.conv``'s generator and discriminator (same layers, in the
    same order, so a test can copy weights across)."""
    import torch
    nn = torch.nn
    c1, c2 = CHANNELS

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Sequential(nn.Linear(Z_DIM, c2 * 2 * 2), nn.ReLU())
            self.deconvs = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
                                         nn.ConvTranspose2d(c1, 1, 4, 2, 1))

        def forward(self, z):
            return self.deconvs(self.inp(z).reshape(len(z), c2, 2, 2)).reshape(len(z), -1)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(nn.Conv2d(1, c1, 3, 2, 1), nn.LeakyReLU(0.01),
                                       nn.Conv2d(c1, c2, 3, 2, 1), nn.LeakyReLU(0.01))
            self.out = nn.Linear(c2 * 2 * 2, 1)

        def forward(self, x):
            return self.out(self.convs(x.reshape(len(x), 1, 8, 8)).reshape(len(x), -1))

    return Generator(), Discriminator()


def torch_step(G, D, opt_g, opt_d, real, z_d, z_g):
    """One discriminator update on (real, G(z_d)), then one generator update on G(z_g): the
    non-saturating losses of ``GAN``, softplus(-D(x)) + softplus(D(G(z))) and
    softplus(-D(G(z)))."""
    import torch
    softplus = torch.nn.functional.softplus
    with torch.no_grad():
        fake = G(z_d)
    opt_d.zero_grad()
    (softplus(-D(real)).mean() + softplus(D(fake)).mean()).backward()
    opt_d.step()
    opt_g.zero_grad()
    softplus(-D(G(z_g))).mean().backward()
    opt_g.step()


def torch_gan(steps, lr, seed, path):
    """Train the twin and save its samples (``sample(n, rng)`` draws z from NumPy's generator
    seeded by rng, as minigen's does) to ``path``; returns the training seconds."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    Xtr = torch.tensor(digits()[0], dtype=torch.float32)
    G, D = torch_networks()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=BETAS)
    ema = {k: v.detach().clone() for k, v in G.state_dict().items()}
    order, pos, rng = np.random.default_rng(seed).permutation(len(Xtr)), 0, \
        np.random.default_rng(seed)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if pos + BATCH > len(Xtr):          # reshuffled each epoch, the last part-batch dropped
            order, pos = rng.permutation(len(Xtr)), 0
        real, pos = Xtr[order[pos:pos + BATCH]], pos + BATCH
        torch_step(G, D, opt_g, opt_d, real, torch.randn(BATCH, Z_DIM),
                   torch.randn(BATCH, Z_DIM))
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in G.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
    seconds = time.perf_counter() - start
    G.load_state_dict(ema)

    def sample(n, rng):
        z = np.random.default_rng(rng).standard_normal((n, Z_DIM)).astype(np.float32)
        with torch.no_grad():
            return G(torch.from_numpy(z)).numpy().astype(np.float64)

    np.savez(path, sw=sample(N_SW, 0), classes=sample(N_CLASSES, 1), figure=sample(100, 2))
    return seconds


def run_torch(steps, lr, seed):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "samples.npz")
        out = subprocess.run([sys.executable, __file__, "--torch-worker", str(steps), str(lr),
                              str(seed), path], capture_output=True, text=True, check=True)
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        with np.load(path) as f:
            samples = {k: f[k] for k in f.files}
    return (lambda n, rng: samples[{0: "sw", 1: "classes", 2: "figure"}[rng]][:n]), seconds


# --- metrics ------------------------------------------------------------------------------
class Judge:
    """The held-out digits, the SW floor and the class labeller, shared by every row."""

    def __init__(self, Xtr, ytr, Xte, yte):
        from sklearn.linear_model import LogisticRegression
        from minigen.metrics import sliced_wasserstein
        self.sw = lambda S: sliced_wasserstein(S, Xte, rng=0)
        self.Xte = Xte
        floors = [self.sw(Xtr[i * N_SW:(i + 1) * N_SW]) for i in range(len(Xtr) // N_SW)]
        self.floor = (float(np.mean(floors)), min(floors), max(floors))
        self.clf = LogisticRegression(max_iter=5000).fit(Xtr, ytr)
        self.accuracy = float((self.clf.predict(Xte) == yte).mean())

    def classes(self, S):
        """(smallest class share, largest class share, share labelled with p >= 0.9)."""
        p = self.clf.predict_proba(np.clip(S, 0, 1))
        shares = np.bincount(p.argmax(1), minlength=10) / len(S)
        return shares.min(), shares.max(), float((p.max(1) >= 0.9).mean())

    def row(self, name, seed, sample, seconds):
        sw = self.sw(sample(N_SW, 0))
        low, high, sure = self.classes(sample(N_CLASSES, 1))
        print(f"| {name} | {seed} | {sw:.4f} | {low:.1%} to {high:.1%} | {sure:.1%} | "
              f"{seconds:.0f} |", flush=True)
        return sw


def summary(name, values):
    values = np.asarray(values)
    print(f"\n{name}: SW mean {values.mean():.4f} (range {values.min():.4f} to "
          f"{values.max():.4f}) over {len(values)} seeds", flush=True)


def figure(path, panels, title):
    from minigen import plot
    fig = plot.image_panels([(label, np.clip(S, 0, 1)) for label, S in panels], cols=10,
                            vmin=0, vmax=1, title=title)
    print(f"\nfigure: {plot.save(fig, path)}")


def speed(rounds, lr, steps=300):
    Xtr = digits()[0]
    minigen_gan(Xtr, 20, lr, 0)
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(minigen_gan(Xtr, steps, lr, 0)[1] / steps * 1e3)
        theirs.append(run_torch(steps, lr, 0)[1] / steps * 1e3)
    print(f"# ms per step, {steps}-step fits, {rounds} rounds; {machine()}")
    for name, ms in (("minigen", mine), ("PyTorch", theirs)):
        print(f"{name}: median {np.median(ms):.1f} ms (range {min(ms):.1f} to {max(ms):.1f})")
    print(f"ratio minigen / PyTorch: {np.median(mine) / np.median(theirs):.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8000, help="discriminator (= generator) steps")
    ap.add_argument("--lr", type=float, default=2e-4, help="Adam's learning rate (both nets)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["gan", "torch", "vae"],
                    choices=["gan", "torch", "vae"])
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--figure", help="write the first seed's samples to this PNG")
    ap.add_argument("--quick", action="store_true", help="300 steps, one seed")
    ap.add_argument("--speed-only", action="store_true", help="time steps of both libraries")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --speed-only")
    ap.add_argument("--torch-worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        steps, lr, seed, path = args.torch_worker
        print(json.dumps({"seconds": torch_gan(int(steps), float(lr), int(seed), path)}))
        return
    if args.speed_only:
        speed(args.rounds, args.lr)
        return
    steps, vae_steps, seeds = ((300, 300, [0]) if args.quick else
                               (args.steps, args.vae_steps, args.seeds))
    Xtr, ytr, Xte, yte = digits()
    judge = Judge(Xtr, ytr, Xte, yte)
    print(f"# conv GAN on the [0, 1] digits: channels {CHANNELS}, z_dim {Z_DIM}, {steps} steps, "
          f"batch {BATCH}, Adam lr {args.lr} betas {BETAS}, EMA {EMA_DECAY}; VAE(z={Z_DIM}) "
          f"{vae_steps} steps; {machine()}")
    low, high, sure = judge.classes(Xte)
    print(f"# held-out digits: classes {low:.1%} to {high:.1%}, labelled with p >= 0.9: "
          f"{sure:.1%} (classifier accuracy {judge.accuracy:.3f}); SW floor (360 training "
          f"digits) {judge.floor[0]:.4f} ({judge.floor[1]:.4f} to {judge.floor[2]:.4f})\n")
    print("| model | seed | SW | class shares | p >= 0.9 | seconds |")
    print("|---|---|---|---|---|---|")
    results, panels = {}, [("held-out digits", Xte[:100])]
    for part in args.parts:
        for seed in seeds:
            if part == "gan":
                rows = [("minigen GAN", *minigen_gan(Xtr, steps, args.lr, seed))]
            elif part == "torch":
                rows = [("PyTorch GAN", *run_torch(steps, args.lr, seed))]
            else:
                vae, seconds = minigen_vae(Xtr, vae_steps, seed)
                rows = [("VAE, decoded means",
                         lambda n, rng, vae=vae: vae.sample(n, rng=rng, mean=True), seconds),
                        ("VAE, Bernoulli draws", lambda n, rng, vae=vae: vae.sample(n, rng=rng),
                         seconds)]
            for name, sample, seconds in rows:
                results.setdefault(name, []).append(judge.row(name, seed, sample, seconds))
                if seed == seeds[0]:
                    panels.append((f"{name} (seed {seed})", sample(100, 2)))
    for name, values in results.items():
        summary(name, values)
    if args.figure:
        figure(args.figure, panels, f"8x8 digits: held-out and samples ({steps:,} GAN steps, "
               f"{vae_steps:,} VAE steps)")


if __name__ == "__main__":
    main()
