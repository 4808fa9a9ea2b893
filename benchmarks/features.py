"""Benchmark language-query latency on a feature field (text encoding excluded).

For N Gaussians with d-channel features and a D x d head: the folded query (`FieldQuery.query`:
one [N,d] x [d,T] product against the cached |W f_i|, LERF relevancy, automatic threshold) vs
a naive baseline in the same run (decode W f_i for every Gaussian, normalise, cosine with the
texts, softmax pairs, min over negatives). Also the one-off cost of caching |W f_i|.

    python benchmarks/features.py [--n 1000000] [--dim 16] [--head-dim 512] [--threads 2]
                                  [--out results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse

import torch
import torch.nn.functional as F
from _common import emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from fields.features import FieldQuery, auto_threshold  # noqa: E402


def naive_query(features, head, positives, negatives):
    decoded = F.normalize(features @ head.T, dim=-1)  # [N,D]: the cost the fold avoids
    pos = decoded @ F.normalize(positives, dim=-1).T
    neg = decoded @ F.normalize(negatives, dim=-1).T
    pairs = torch.stack([pos[:, :1].expand_as(neg), neg], dim=-1)
    rel = torch.softmax(10 * pairs, dim=-1)[..., 0].amin(dim=1)
    return rel > auto_threshold(rel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=512)
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(args.n, args.dim, generator=gen)
    head = torch.randn(args.head_dim, args.dim, generator=gen)
    positives = torch.randn(1, args.head_dim, generator=gen)
    negatives = torch.randn(args.negatives, args.head_dim, generator=gen)

    prepare = timeit(lambda: FieldQuery(features, head), warmup=1, repeat=3)
    fq = FieldQuery(features, head)
    folded = timeit(lambda: fq.query(positives, negatives), warmup=2, repeat=args.repeat)
    rel_only = timeit(lambda: fq.relevancy(positives, negatives), warmup=2, repeat=args.repeat)
    naive = timeit(lambda: naive_query(features, head, positives, negatives), warmup=1, repeat=3)
    fast_mask = fq.query(positives, negatives).mask
    same = bool(torch.equal(fast_mask, naive_query(features, head, positives, negatives)))
    emit(
        {
            "benchmark": "features.query",
            "machine": machine_info(),
            "n": args.n,
            "dim": args.dim,
            "head_dim": args.head_dim,
            "negatives": args.negatives,
            "prepare_norms": prepare,
            "query_folded": folded,
            "relevancy_folded": rel_only,
            "query_naive": naive,
            "speedup_vs_naive": round(naive["median_ms"] / folded["median_ms"], 1),
            "masks_equal": same,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
