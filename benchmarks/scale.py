"""Scale benchmark: KDE and Gaussian-mixture EM block-wise over Dask against the in-memory path.

    python benchmarks/scale.py [--quick] [--repeat R]

Same data, same answer (checked), four ways: in memory; Dask's threaded scheduler in this
process; a distributed.LocalCluster of one worker process; one of two worker processes (one
thread each). The cores are shared fairly: the in-memory run and the one worker use Numba's
two threads, each of the two workers one (NUMBA_NUM_THREADS=1), so every row uses both cores.
Cluster inputs are persisted on the workers before timing (data already lives there on a real
cluster). Prints a Markdown table: wall time median [min-max] over R interleaved rounds,
throughput, and the overhead against the in-memory time.

  * KDE: score m queries against n points, d=2, a fixed bandwidth (the n·m kernel sum).
  * GMM: GaussianMixture.fit, full covariances, exactly 20 EM iterations (tol=0) from the same
    initial parameters: one pass over the chunks per iteration.
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import distributed  # noqa: E402

from minigen.density import KDE, GaussianMixture  # noqa: E402


def clusters():
    """One-worker and two-worker LocalClusters; the cores split as the module docstring says."""
    made = {}
    for workers, numba_threads in ((1, "2"), (2, "1")):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=":0",
                                           silence_logs=50, env={"NUMBA_NUM_THREADS": numba_threads})
        made[workers] = (cluster, distributed.Client(cluster, set_as_default=False))
    return made


def kde_case(n, m, chunk, query_chunk):
    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    memory = KDE(0.2).fit(X)
    Xd = da.from_array(X, chunks=(chunk, 2))
    Qd = da.from_array(Q, chunks=(query_chunk, 2))
    return {"memory": lambda: memory.score_samples(Q),
            "dask": lambda Xp, Qp: KDE(0.2).fit(Xp).score_samples(Qp).compute(),
            "inputs": (Xd, Qd), "work": float(n) * m, "unit": "pairs/s",
            "label": f"KDE score d=2, n=m={n:,} ({n // chunk}x{m // query_chunk} blocks)"}


def gmm_case(n, d, K, chunk):
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4, size=(K, d))
    X = centres[rng.integers(K, size=n)] + rng.normal(size=(n, d))
    init = dict(weights_init=np.full(K, 1.0 / K), means_init=X[:K],
                precisions_init=np.stack([np.eye(d)] * K), max_iter=20, tol=0.0)

    def fit(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # tol=0 never 'converges'
            return GaussianMixture(K, **init).fit(data).means_

    return {"memory": lambda: fit(X), "dask": lambda Xp: fit(Xp),
            "inputs": (da.from_array(X, chunks=(chunk, d)),), "work": 20.0 * n,
            "unit": "rows/s per iteration",
            "label": f"GMM fit {n:,}x{d}, K={K} full, 20 iters ({n // chunk} chunks)"}


def run(case, made, repeat):
    """Interleaved rounds of every contender; the results are checked against memory's."""
    contenders = {"in memory": case["memory"],
                  "Dask threads": lambda: case["dask"](*case["inputs"])}
    for workers, (_, client) in made.items():
        inputs = client.persist(case["inputs"])
        client.gather(distributed.futures_of(inputs))          # wait until they are there

        def on_cluster(client=client, inputs=inputs):
            with dask.config.set(scheduler=client):
                return case["dask"](*inputs)
        contenders[f"{workers} worker{'s' * (workers > 1)}"] = on_cluster
    expected = case["memory"]()
    times = {name: [] for name in contenders}
    for name, fn in contenders.items():                      # warm-up and check
        np.testing.assert_allclose(fn(), expected, rtol=1e-9, atol=1e-9)
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = np.median(times["in memory"])
    rows = []
    for name, t in times.items():
        t = np.array(t)
        rows.append(f"| {case['label']} | {name} | {np.median(t):.2f} [{t.min():.2f}-{t.max():.2f}] "
                    f"| {case['work'] / np.median(t):.3g} {case['unit']} | "
                    f"{np.median(t) / base:.2f}x [{t.min() / base:.2f}-{t.max() / base:.2f}] |")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kde = (8_000, 2_000, 2_000) if args.quick else (20_000, 5_000, 5_000)
    gmm = (40_000, 10_000) if args.quick else (100_000, 25_000)
    made = clusters()
    try:
        print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start")
        print("| workload | where | wall time (s) | throughput | vs in memory |")
        print("|---|---|---:|---:|---:|")
        for case in (kde_case(kde[0], kde[0], kde[1], kde[2]),
                     gmm_case(gmm[0], 5, 5, gmm[1])):
            print("\n".join(run(case, made, args.repeat)), flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        for cluster, client in made.values():
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
