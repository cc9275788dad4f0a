"""Loads a `kdprune export --format dense` file into the matching PyTorch
module with `load_state_dict(strict=True)` and prints its logits on a fixed
input as JSON — the check cli/tests/export.rs makes where torch is installed.

    python scripts/python/torch_load_dense.py FILE.safetensors lenet-300-100|lenet5 C H W CLASSES BATCH

The input is x[i] = sin(i) (f64, rounded to f32), in [BATCH, C, H, W] order.
"""

import json
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class LeNet300100(nn.Module):
    def __init__(self, inputs, classes):
        super().__init__()
        self.fc1 = nn.Linear(inputs, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """kdprune's lenet5 on C×H×W (conv2 unpadded when the pooled map is ≥ 10×10)."""

    def __init__(self, c, h, w, classes):
        super().__init__()
        p2 = 0 if h // 2 >= 10 and w // 2 >= 10 else 2
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=p2)
        h2, w2 = (h // 2 + 2 * p2 - 4) // 2, (w // 2 + 2 * p2 - 4) // 2
        self.fc1 = nn.Linear(16 * h2 * w2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def main():
    path, arch, c, h, w, classes, batch = sys.argv[1:8]
    c, h, w, classes, batch = map(int, (c, h, w, classes, batch))
    model = LeNet300100(c * h * w, classes) if arch == "lenet-300-100" else LeNet5(c, h, w, classes)
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    n = batch * c * h * w
    x = torch.from_numpy(np.sin(np.arange(n, dtype=np.float64)).astype(np.float32))
    with torch.no_grad():
        logits = model(x.reshape(batch, c, h, w))
    print(json.dumps(logits.flatten().tolist()))


if __name__ == "__main__":
    main()
