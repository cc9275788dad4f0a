"""Decodes every bitmask-encoded tensor of a `kdprune export --format sparse`
file with compressed-tensors' own decoder (`bitmask_decompress`, shipped up to
compressed-tensors 0.12.2) and compares it with the same checkpoint exported
dense — the check cli/tests/export.rs makes where compressed-tensors is
installed. A `--format sparse-int8` file decodes, the same way, to the i8
weights of the `--format int8` export (every other tensor, scales included,
equal too).

    python scripts/python/decode_sparse_with_compressed_tensors.py SPARSE.safetensors DENSE.safetensors
    python scripts/python/decode_sparse_with_compressed_tensors.py SPARSE_INT8.safetensors INT8.safetensors

Prints `decoded N tensors, all equal` and exits 0, or names the first tensor
that differs and exits 1.
"""

import sys

import torch
from compressed_tensors.compressors.sparse_compressors.sparse_bitmask import bitmask_decompress
from safetensors.torch import load_file


def main():
    sparse, dense = load_file(sys.argv[1]), load_file(sys.argv[2])
    names = sorted(k[: -len(".shape")] for k in sparse if k.endswith(".shape"))
    for name in names:
        shape = torch.Size(sparse[f"{name}.shape"].tolist())
        decoded = bitmask_decompress(sparse[f"{name}.compressed"], sparse[f"{name}.bitmask"], shape)
        if not torch.equal(decoded, dense[name]):
            print(f"{name}: decoded tensor differs from the dense export")
            sys.exit(1)
    plain = [k for k in sparse if k in dense]
    for name in plain:
        if not torch.equal(sparse[name], dense[name]):
            print(f"{name}: stored tensor differs from the dense export")
            sys.exit(1)
    print(f"decoded {len(names)} tensors, all equal")


if __name__ == "__main__":
    main()
