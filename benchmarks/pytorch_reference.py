#!/usr/bin/env python3
"""PyTorch (CPU) figures for the models and ops of `bench-train`, `bench-conv` and `bench-infer`.

Same networks, batch (128), optimizer (SGD, Nesterov momentum 0.9, weight
decay 5e-4 on weights only, lr 0.01), loss (cross-entropy) and thread count
as the Rust benchmarks; prints one line per model and per op:

    model=NAME pytorch_img_s=X
    op=NAME pytorch_ms=X

Run it beside the Rust binaries (not part of CI; needs `pip install torch`):

    python3 benchmarks/pytorch_reference.py [--threads 2] [--rounds 5] [--steps 4]
        [--model resnet20] [--no-ops] [--device cuda]

`--model NAME` runs that model only (as `bench-train --model NAME`);
`--no-ops` skips the convolution and matmul lines of `bench-conv`.
`--infer` prints instead PyTorch's dense inference (eval mode, no_grad) of
`bench-infer`'s models at batch 1 and 64, each figure the median of
`--rounds` (at least 21) samples of enough calls to last about 2 ms:

    model=NAME batch=B pytorch_us=X
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 128
CLASSES = 10


class SmallCnn(nn.Module):
    """conv 3x3 (C->32) -> pool -> ReLU -> conv 3x3 (32->64) -> pool -> ReLU -> linear,
    as `benchmarks/src/small_cnn.rs`."""

    def __init__(self, in_channels=3, size=32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * (size // 4) ** 2, CLASSES)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc(x.flatten(1))


class LeNet300100(nn.Module):
    """LeNet-300-100 on 784 inputs, as `models/src/zoo/mlp.rs`."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, CLASSES)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


class LeNet5(nn.Module):
    """LeNet-5 on 28x28, as `models/src/lenet5.rs` (conv1 pad 2, conv2 pad 0)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, CLASSES)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlockA(nn.Module):
    """CIFAR ResNet block with shortcut A, as `models/src/zoo/resnet_cifar.rs`."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if self.pad is not None:
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(h + x)


class ResNet20(nn.Module):
    """ResNet-20 (He et al. 2016, shortcut A), training mode, as the zoo's `resnet20`;
    `depth` 6n + 2 gives the other CIFAR ResNets (56: the zoo's `resnet56`)."""

    def __init__(self, in_channels=3, depth=20):
        super().__init__()
        per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate([16, 32, 64]):
            for i in range(per_stage):
                blocks.append(BasicBlockA(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x):
        # inputs under 32 pixels are zero-padded to 32, as the zoo's InputPlan
        grow_h, grow_w = max(0, 32 - x.shape[2]), max(0, 32 - x.shape[3])
        if grow_h or grow_w:
            x = F.pad(x, (grow_w // 2, grow_w - grow_w // 2, grow_h // 2, grow_h - grow_h // 2))
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


# name, input (C, H, W), constructor; one line per model, as in bench-train.
MODELS = [
    ("small-cnn", (3, 32, 32), SmallCnn),
    ("lenet5", (1, 28, 28), LeNet5),
    ("resnet20", (3, 32, 32), ResNet20),
    ("resnet56", (3, 32, 32), lambda: ResNet20(depth=56)),
]


def interleaved_medians(rounds, fns):
    """Median seconds of each function over `rounds` rounds (after a warm-up)."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for f, t in zip(fns, times):
            start = time.perf_counter()
            f()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def train_step_fn(model, x, y, steps, sync=lambda: None):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.01,
        momentum=0.9,
        nesterov=True,
    )

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sync()

    return run


def per_call_us(rounds, fn):
    """Median microseconds per call of `fn`, a sample being enough calls for ~2 ms."""
    start = time.perf_counter()
    fn()
    calls = max(1, min(10_000, int(2e-3 / max(time.perf_counter() - start, 1e-7))))

    def sample():
        for _ in range(calls):
            fn()

    (t,) = interleaved_medians(rounds, [sample])
    return 1e6 * t / calls


def infer(rounds):
    models = [
        ("lenet-300-100", LeNet300100),
        ("lenet5", LeNet5),
        ("resnet20", lambda: ResNet20(in_channels=1)),
    ]
    for name, ctor in models:
        model = ctor().eval()
        for batch in (1, 64):
            x = torch.randn(batch, 1, 28, 28)

            def fwd():
                with torch.no_grad():
                    model(x)

            print(f"model={name} batch={batch} pytorch_us={per_call_us(rounds, fwd):.1f}", flush=True)


def grad_check(name, ctor, shape, dev):
    """The bench-train --device check on PyTorch: one forward and backward of the
    same weights and batch on the CPU and on `dev`, the worst gradient error
    relative to the tensor's largest CPU gradient, as `grad_check` lines."""
    torch.manual_seed(0)
    cpu_model = ctor()
    dev_model = ctor()
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(dev)
    x = torch.randn(BATCH, *shape)
    y = torch.arange(BATCH) * 7 % CLASSES
    F.cross_entropy(cpu_model(x), y).backward()
    F.cross_entropy(dev_model(x.to(dev)), y.to(dev)).backward()
    worst = ("", 0.0)
    for (n, a), (_, b) in zip(cpu_model.named_parameters(), dev_model.named_parameters()):
        rel = ((a.grad - b.grad.cpu()).abs().max() / a.grad.abs().max().clamp_min(1e-12)).item()
        if rel >= worst[1]:
            worst = (n, rel)
    print(f"grad_check model={name} framework=pytorch worst={worst[0]} max_rel={worst[1]:.2e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", choices=[m[0] for m in MODELS], help="run this model only")
    parser.add_argument("--no-ops", action="store_true", help="skip the bench-conv figures")
    parser.add_argument("--infer", action="store_true", help="bench-infer's dense inference only")
    parser.add_argument(
        "--grad-check",
        action="store_true",
        help="with --device cuda: the CPU-against-GPU gradient check of bench-train, on PyTorch",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda: the train steps on that device, in strict f32 (no TF32), "
        "as `bench-train --device cuda`",
    )
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = lambda: None
    if dev.type == "cuda":
        # candle computes in f32 on the GPU; so does the reference
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        sync = torch.cuda.synchronize
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.infer:
        print(f"# torch={torch.__version__} threads={torch.get_num_threads()}", flush=True)
        infer(max(args.rounds, 21))
        return
    where = f"device={args.device}" if dev.type != "cpu" else f"threads={torch.get_num_threads()}"
    print(f"# torch={torch.__version__} {where} batch={BATCH}", flush=True)

    for name, (c, h, w), ctor in MODELS:
        if args.model and name != args.model:
            continue
        if args.grad_check:
            grad_check(name, ctor, (c, h, w), dev)
            continue
        model = ctor().to(dev)
        x = torch.randn(BATCH, c, h, w, device=dev)
        y = (torch.arange(BATCH) * 7 % CLASSES).to(dev)
        (t,) = interleaved_medians(args.rounds, [train_step_fn(model, x, y, args.steps, sync)])
        print(f"model={name} pytorch_img_s={BATCH * args.steps / t:.1f}", flush=True)

    if args.no_ops or dev.type != "cpu":
        return
    # bench-conv: conv 32->64, 3x3, pad 1 on [128, 32, 16, 16]; forward, and
    # forward + backward with input and weight (and bias) gradients.
    conv = nn.Conv2d(32, 64, 3, padding=1)
    x = torch.randn(128, 32, 16, 16, requires_grad=True)

    def fwd():
        with torch.no_grad():
            conv(x)

    def fwd_bwd():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    rounds = max(args.rounds, 7)
    t_fwd, t_both = interleaved_medians(rounds, [fwd, fwd_bwd])
    print(f"op=conv32x64_16x16_b128_fwd pytorch_ms={1e3 * t_fwd:.2f}")
    print(f"op=conv32x64_16x16_b128_fwd_bwd pytorch_ms={1e3 * t_both:.2f}")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    (t,) = interleaved_medians(rounds, [lambda: a @ b])
    print(f"op=matmul_f32_1024 pytorch_ms={1e3 * t:.2f}")


if __name__ == "__main__":
    main()
