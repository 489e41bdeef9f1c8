#!/usr/bin/env python3
"""Trains ResNet-20 on a CIFAR-10 folder in plain PyTorch with the recipe
`resnet train` uses, to set its test error beside ours.

The recipe (the paper's): batch 128, SGD with momentum 0.9 (PyTorch's form)
and weight decay 1e-4, lr 0.1 divided by 10 at each milestone, padding by 4
then a random 32x32 crop and a random horizontal flip, the per-pixel mean of
the training images subtracted; the network is torch_cuda_step.py's ResNet-20
(option-A shortcuts) with PyTorch's default initialisation. The data is read
from the official binary layout (data_batch_*.bin, test_batch.bin), as
`resnet train --data` reads it, so the bundled sample works as it is.

    python3 scripts/torch_cifar_train.py --data data/cifar-10-sample \
        --iterations 3000 --milestones 1500,2250 --seed 1

Prints one JSON object: the test error (%) after the last iteration, the
mean training loss of the last 100 iterations, seconds, device, versions.
Runs on the GPU when there is one (cuDNN's defaults: TF32 convolutions,
benchmark mode), else on the CPU.
"""

import argparse
import json
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from torch_cuda_step import resnet20  # noqa: E402

RECORD = 1 + 32 * 32 * 3


def read_batches(paths):
    """Images (uint8, N x 3 x 32 x 32) and labels (int64) of CIFAR-10 binary files."""
    raw = b"".join(p.read_bytes() for p in paths)
    if not raw or len(raw) % RECORD:
        raise SystemExit(f"{[str(p) for p in paths]}: not whole CIFAR-10 records of {RECORD} bytes")
    records = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].long()


def load(data):
    data = pathlib.Path(data)
    train = sorted(data.glob("data_batch_*.bin"))
    test = data / "test_batch.bin"
    if not train or not test.exists():
        raise SystemExit(f"{data}: expected data_batch_*.bin and test_batch.bin")
    return read_batches(train), read_batches([test])


def augment(images, gen):
    """Pad by 4 (zeros, after mean subtraction), random 32x32 crop, random flip."""
    n = images.shape[0]
    padded = F.pad(images, (4, 4, 4, 4))
    xs = torch.randint(0, 9, (n,), generator=gen)
    ys = torch.randint(0, 9, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, ys[i] : ys[i] + 32, xs[i] : xs[i] + 32]
        out[i] = crop.flip(2) if flips[i] else crop
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/cifar-10-sample")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--milestones", default="1500,2250")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    milestones = [int(m) for m in args.milestones.split(",") if m]

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    (train_x, train_y), (test_x, test_y) = load(args.data)
    mean = train_x.float().mean(0, keepdim=True) / 255.0
    train_x = train_x.float() / 255.0 - mean
    test_x = test_x.float() / 255.0 - mean
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    net = resnet20().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    start, losses, order, at = time.time(), [], torch.randperm(len(train_y), generator=gen), 0
    net.train()
    for _ in range(args.iterations):
        if at + args.batch > len(order):
            order, at = torch.randperm(len(train_y), generator=gen), 0
        idx = order[at : at + args.batch]
        at += args.batch
        x = augment(train_x[idx], gen).to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), train_y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    last = torch.stack(losses[-100:]).mean().item()

    net.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(test_y), 500):
            logits = net(test_x[i : i + 500].to(device))
            wrong += (logits.argmax(1).cpu() != test_y[i : i + 500]).sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(
        json.dumps(
            {
                "test_error": 100.0 * wrong / len(test_y),
                "test_images": len(test_y),
                "train_loss_last_100": last,
                "iterations": args.iterations,
                "seed": args.seed,
                "seconds": time.time() - start,
                "device": str(device),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
