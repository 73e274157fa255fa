"""Auto-encoders and VAEs on binarised digits: quality, and the VAE's speed against PyTorch.

    python benchmarks/models_ae.py [--epochs 100] [--seeds 0 1 2] [--quick]

Data: ``load_digits(scale='binary')``, the seed-0 split (1,437 training and 360 held-out
images). Every model gets the same budget (``--epochs`` over the training set, batch 128, Adam
lr 1e-3) with each seed, code size 8 (HierarchicalVAE: z_dims (16, 4)), MLP width (256, 256),
Bernoulli likelihood / reconstruction. Printed as Markdown, mean and range over the seeds:
  * held-out -IWAE (k = 100, nats per image) of VAE, HierarchicalVAE, and the same VAE written
    in PyTorch (run in its own process, same architecture, initialisation rule, batches per
    epoch and seed), next to independent Bernoulli pixels;
  * reconstruction error (mean squared error per pixel of the decoded mean of the code of
    each held-out image) of AutoEncoder, SWAE, SupervisedAutoEncoder, VAE (the code's mean),
    and PCA with 8 components (the classical row);
  * the supervised AE's held-out accuracy;
  * sliced Wasserstein (256 projections) between 1,000 generated binary digits (Bernoulli draws
    from each model's decoded means) and the held-out digits, for every model, with
    PCA + GaussianMixture(10) as the classical row (its samples clipped to [0, 1] and drawn
    the same way) and the training set itself as the floor;
  * time per training epoch, minigen VAE / PyTorch VAE, both single-threaded: over the full
    runs above, and best of 5 interleaved 5-epoch runs (``--speed-only`` runs just that).
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # single-threaded, as PyTorch below
import numpy as np  # noqa: E402

Z, HIDDEN, BATCH, LR, K = 8, (256, 256), 128, 1e-3, 100


def binary_digits():
    from minigen.data import load_digits
    return load_digits("train", scale="binary")[0], load_digits("test", scale="binary")[0]


def bernoulli_draws(means, rng):
    return (rng.random(means.shape) < np.clip(means, 0, 1)).astype(np.float64)


# --- PyTorch: the same VAE, run with --torch-worker in its own process ---------------------
def torch_vae(seed, epochs):
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    nn = torch.nn
    X, Xt = (torch.tensor(a, dtype=torch.float32) for a in binary_digits())

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)

    enc, dec = mlp((64,) + HIDDEN + (2 * Z,)), mlp((Z,) + HIDDEN[::-1] + (64,))
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    bce = nn.functional.binary_cross_entropy_with_logits
    gen = torch.Generator().manual_seed(seed)
    per_epoch = len(X) // BATCH
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        for b in range(per_epoch):
            x = X[order[b * BATCH:(b + 1) * BATCH]]
            mu, logvar = enc(x).chunk(2, dim=1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            rec = bce(dec(z), x, reduction="none").sum(1)
            kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mu, logvar = enc(Xt).chunk(2, dim=1)
        eps = torch.randn((K,) + mu.shape, generator=gen)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = -0.5 * (np.log(2 * np.pi) + logvar + eps ** 2).sum(-1)
        log_prior = -0.5 * (np.log(2 * np.pi) + z ** 2).sum(-1)
        log_lik = -bce(dec(z), Xt.expand(K, -1, -1), reduction="none").sum(-1)
        iwae = torch.logsumexp((log_lik + log_prior - log_q).double(), 0) - np.log(K)
        means = torch.sigmoid(dec(torch.randn((1000, Z), generator=gen))).numpy()
    return {"nll": -float(iwae.mean()), "sec_per_epoch": seconds / epochs,
            "samples": means.tolist()}


def run_torch(seed, epochs):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--torch-worker", str(seed), str(epochs)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


# --- minigen -------------------------------------------------------------------------------
def minigen_rows(seed, epochs):
    from minigen.density import PCA, GaussianMixture, LatentDensity
    from minigen.metrics import sliced_wasserstein
    from minigen.models import SWAE, VAE, AutoEncoder, HierarchicalVAE, SupervisedAutoEncoder
    from minigen.data import load_digits
    X, Xt = binary_digits()
    y, yt = load_digits("train")[1], load_digits("test")[1]
    rng = np.random.default_rng(seed)
    fit = dict(epochs=epochs, batch_size=BATCH, lr=LR, rng=seed)
    common = dict(hidden=HIDDEN, rng=seed)
    models = {
        "VAE": VAE(64, Z, **common).fit(X, **fit),
        "HierarchicalVAE": HierarchicalVAE(64, (16, 4), **common).fit(X, **fit),
        "AutoEncoder": AutoEncoder(64, Z, reconstruction="bernoulli", **common).fit(X, **fit),
        "SWAE": SWAE(64, Z, reconstruction="bernoulli", **common).fit(X, **fit),
        "SupervisedAutoEncoder": SupervisedAutoEncoder(64, Z, 10, reconstruction="bernoulli",
                                                       **common).fit(X, y, **fit),
    }
    sw = lambda S: sliced_wasserstein(S, Xt, 256, rng=0)   # noqa: E731
    row = {"sw": {}, "rec": {}, "nll": {}}
    for name, m in models.items():
        means = m.sample(1000, rng=rng, mean=True) if m.has_density else m.sample(1000, rng=rng)
        row["sw"][name] = sw(bernoulli_draws(means, rng))
        if m.has_density:
            row["nll"][name] = -m.score(Xt, k=K, rng=rng)
    pca = PCA(Z).fit(X)
    for name, m in [(n, models[n]) for n in ("AutoEncoder", "SWAE", "SupervisedAutoEncoder")] \
            + [("VAE (mean of q(z|x))", models["VAE"]), ("PCA (8 components)", pca)]:
        row["rec"][name] = float(np.mean((m.inverse_transform(m.transform(Xt)) - Xt) ** 2))
    vae = models["VAE"]
    classical = LatentDensity(PCA(Z), GaussianMixture(10, random_state=seed)).fit(X)
    row["sw"]["PCA + GaussianMixture(10)"] = sw(bernoulli_draws(
        classical.sample(1000, rng=rng, residual=False), rng))
    row["sw"]["training set (floor)"] = sw(X)
    row["accuracy"] = float(np.mean(models["SupervisedAutoEncoder"].predict(Xt) == yt))
    row["vae_sec_per_epoch"] = vae.history_.seconds / epochs
    p = np.clip(X.mean(0), 1e-3, 1 - 1e-3)
    row["nll"]["independent pixels"] = -float(np.mean((Xt * np.log(p)
                                                       + (1 - Xt) * np.log1p(-p)).sum(1)))
    return row


def speed(repeats=5, epochs=5):
    """Best-of-``repeats`` seconds per epoch of the VAE, minigen and PyTorch taking turns, so
    that load from other jobs on a shared machine hits both alike."""
    from minigen.models import VAE
    X = binary_digits()[0]
    ours, theirs = [], []
    for r in range(repeats):
        model = VAE(64, Z, hidden=HIDDEN, rng=r)
        model.fit(X, epochs=epochs, batch_size=BATCH, lr=LR, rng=r)
        ours.append(model.history_.seconds / epochs)
        theirs.append(run_torch(r, epochs)["sec_per_epoch"])
    return min(ours), min(theirs), np.array(ours) / np.array(theirs)


def summary(values, fmt="{:.3f}"):
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(np.mean(v))} ({fmt.format(v.min())} to {fmt.format(v.max())})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="10 epochs, one seed")
    parser.add_argument("--speed-only", action="store_true", help="only the interleaved timing")
    parser.add_argument("--torch-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        print(json.dumps(torch_vae(*args.torch_worker)))
        return
    if args.quick:
        args.epochs, args.seeds = 10, [0]
    from _timing import machine
    ours, theirs, ratios = speed()
    timing = (f"VAE seconds per epoch, best of 5 interleaved runs of 5 epochs: minigen "
              f"{ours:.3f}, PyTorch {theirs:.3f}, ratio {ours / theirs:.2f} (per-run ratios "
              f"{ratios.min():.2f} to {ratios.max():.2f}, median {np.median(ratios):.2f})")
    if args.speed_only:
        print(f"{machine()}\n\n{timing}")
        return
    from minigen.metrics import sliced_wasserstein
    Xt = binary_digits()[1]
    rows, torch_rows = [], []
    for seed in args.seeds:
        rows.append(minigen_rows(seed, args.epochs))
        torch_rows.append(run_torch(seed, args.epochs))
        t = torch_rows[-1]
        t["sw"] = sliced_wasserstein(bernoulli_draws(np.array(t.pop("samples")),
                                                     np.random.default_rng(seed)), Xt, 256, rng=0)
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    print(f"{machine()}; {args.epochs} epochs, seeds {args.seeds}; mean (min to max)\n")
    print("| model | held-out -IWAE(k=100), nats |\n|---|---|")
    for name in rows[0]["nll"]:
        print(f"| {name} | {summary([r['nll'][name] for r in rows], '{:.2f}')} |")
    print(f"| VAE in PyTorch (reference) | {summary([t['nll'] for t in torch_rows], '{:.2f}')} |")
    print("\n| model | reconstruction MSE per pixel (held out) |\n|---|---|")
    for name in rows[0]["rec"]:
        print(f"| {name} | {summary([r['rec'][name] for r in rows], '{:.4f}')} |")
    print(f"\nSupervisedAutoEncoder held-out accuracy: "
          f"{summary([r['accuracy'] for r in rows])}\n")
    print("| model | sliced Wasserstein, 1,000 samples vs held-out |\n|---|---|")
    for name in rows[0]["sw"]:
        print(f"| {name} | {summary([r['sw'][name] for r in rows])} |")
    print(f"| VAE in PyTorch (reference) | {summary([t['sw'] for t in torch_rows])} |")
    ratios = [r["vae_sec_per_epoch"] / t["sec_per_epoch"] for r, t in zip(rows, torch_rows)]
    print(f"\nVAE time per epoch over the full runs: minigen "
          f"{summary([r['vae_sec_per_epoch'] for r in rows], '{:.3f}')} s, PyTorch "
          f"{summary([t['sec_per_epoch'] for t in torch_rows], '{:.3f}')} s; ratio median "
          f"{np.median(ratios):.2f} (range {min(ratios):.2f} to {max(ratios):.2f})\n{timing}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
