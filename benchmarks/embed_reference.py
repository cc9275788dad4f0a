#!/usr/bin/env python3
"""sentence-transformers (PyTorch, CPU) figures for `bench-embed` and `kdprune eval-retrieval`.

The same model folder, texts, batch size and thread count as `bench-embed`:
the texts are the glosses then the example sentences of a WordNet glosses
split, the first `--texts` of them. Prints the median over `--rounds` of
the sentences per second of `SentenceTransformer.encode` (mean pooling, L2
normalisation):

    pytorch_sent_s=X

With `--retrieval` it prints instead the retrieval task of the split, as
`kdprune eval-retrieval` computes it (every example a query, every gloss a
candidate, cosine similarity, ties counted against the answer):

    split=test queries=Q glosses=G accuracy_at_1=A mrr=M

Not part of CI; needs `pip install torch sentence-transformers`:

    python3 benchmarks/embed_reference.py --model ../shared/models/all-MiniLM-L6-v2 \
        --data-dir ../shared/datasets/wordnet-glosses [--threads 2] [--texts 1024] [--retrieval]
"""

import argparse
import csv
import gzip
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer


def read_split(data_dir, split):
    glosses, queries = [], []
    with gzip.open(f"{data_dir}/{split}.tsv.gz", "rt", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for i, row in enumerate(rows):
            glosses.append(row["gloss"])
            for e in row["examples"].split(" ||| "):
                if e.strip():
                    queries.append((e.strip(), i))
    return glosses, queries


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texts", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--retrieval", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    glosses, queries = read_split(a.data_dir, a.split)
    if a.retrieval:
        g = model.encode(glosses, batch_size=a.batch_size, normalize_embeddings=True, convert_to_tensor=True)
        q = model.encode([t for t, _ in queries], batch_size=a.batch_size, normalize_embeddings=True,
                         convert_to_tensor=True)
        sims = q @ g.T
        answers = torch.tensor([i for _, i in queries])
        own = sims[torch.arange(len(queries)), answers]
        ranks = (sims >= own[:, None]).sum(1)  # the answer itself counts once: rank 1 when alone at the top
        acc = (ranks == 1).float().mean().item()
        mrr = (1.0 / ranks.double()).mean().item()
        print(f"split={a.split} queries={len(queries)} glosses={len(glosses)} accuracy_at_1={acc:.4f} mrr={mrr:.4f}")
        return
    texts = (glosses + [t for t, _ in queries])[: a.texts]
    model.encode(texts[: a.batch_size], batch_size=a.batch_size)  # warm-up
    rates = []
    for _ in range(a.rounds):
        start = time.perf_counter()
        model.encode(texts, batch_size=a.batch_size, normalize_embeddings=True)
        rates.append(len(texts) / (time.perf_counter() - start))
    print(f"pytorch_sent_s={statistics.median(rates):.1f}")


if __name__ == "__main__":
    main()
