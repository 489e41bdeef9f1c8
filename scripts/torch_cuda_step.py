#!/usr/bin/env python3
"""Times a PyTorch training step on a GPU, to compare with `resnet train --device cuda`.

The networks are the ones of this repository: ResNet-20 for CIFAR (16/32/64
filters, option-A shortcuts: identity, stride-2 subsampling and zero-padded
channels) and the ImageNet ResNet-50 (bottleneck blocks, stride on the first
1x1 as in the paper, projection shortcuts where the shape changes). One step
is what `resnet train` does per iteration: copy a batch from host memory to
the GPU, forward, cross-entropy, backward, SGD with momentum 0.9 and weight
decay 1e-4 (lr 0.1). The images are random (data loading is not timed), in
pinned host memory (`--input host`), or already on the GPU (`--input gpu`:
not even the copy is timed; `--input both` times the two one after the
other). PyTorch's defaults are kept: f32, cuDNN allowed to use TF32 for
convolutions, cudnn.benchmark on, NCHW; `--precision bf16` runs the forward
pass and the loss under bf16 autocast (the weights and the update stay f32),
`--channels-last` keeps the model and the batches NHWC. The networks are
defined here, so torchvision is not needed.

    python3 scripts/torch_cuda_step.py --arch resnet20 --batch 128 --iterations 300
    python3 scripts/torch_cuda_step.py --arch resnet50 --size 224 --batch 128 --iterations 30
    python3 scripts/torch_cuda_step.py --arch resnet50 --precision bf16 --channels-last

Prints one JSON object: images/s, ms per step, versions.

    python3 scripts/torch_cuda_step.py --write-folder DIR

writes an ImageNet-style image folder for `resnet train --data DIR` instead
(DIR/class_K/NNNN.jpg or .png; 2 classes x 64 photo-like 256x256 images,
seeded): JPEGs (quality 90) where PIL is installed, else PNGs written with zlib.
"""

import argparse
import json
import math
import pathlib
import struct
import time
import zlib

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convs; option-A shortcut where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + short)


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 (x4); stride on the first 1x1; projection where the shape changes."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(out + short)


def resnet20():
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, cout in enumerate([16, 32, 64]):
        for i in range(3):
            layers.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def resnet50():
    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if stage > 0 and i == 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def photo_like(side, gen):
    """A side x side RGB image (uint8, HWC): smooth colour waves plus noise, so
    that decoding it costs about what a photo of that size does."""
    u = torch.arange(side, dtype=torch.float32) / side
    phase = torch.rand(3, generator=gen) * 2 * math.pi
    freq = 3 + 4 * torch.rand(3, 2, generator=gen)
    waves = [
        0.5 + 0.4 * torch.sin(freq[c, 0] * 2 * u[None, :] + freq[c, 1] * u[:, None] * 2 + phase[c])
        for c in range(3)
    ]
    image = torch.stack(waves, dim=-1) + 0.08 * (2 * torch.rand(side, side, 3, generator=gen) - 1)
    return (image.clamp(0, 1) * 255).to(torch.uint8)


def to_bytes(t):
    """The bytes of a uint8 tensor, with or without numpy."""
    try:
        return t.contiguous().numpy().tobytes()
    except Exception:  # torch built or installed without numpy
        return bytes(t.flatten().tolist())


def png(rgb, width, height):
    """An 8-bit RGB PNG of `rgb` (HWC bytes): no filtering, zlib level 6."""
    row = 3 * width
    raw = b"".join(b"\x00" + rgb[y * row : (y + 1) * row] for y in range(height))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_folder(root, classes, per_class, side, fmt):
    """Writes `classes` x `per_class` images into root/class_K/; returns the format used."""
    if fmt in ("auto", "jpeg"):
        try:
            from PIL import Image
        except ImportError:
            if fmt == "jpeg":
                raise
            fmt = "png"
        else:
            fmt = "jpeg"
    torch.set_num_threads(1)  # small images: more threads only contend
    gen = torch.Generator().manual_seed(0)
    root = pathlib.Path(root)
    for k in range(classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rgb = to_bytes(photo_like(side, gen))
            if fmt == "jpeg":
                Image.frombytes("RGB", (side, side), rgb).save(folder / f"{i:04d}.jpg", quality=90)
            else:
                (folder / f"{i:04d}.png").write_bytes(png(rgb, side, side))
    return fmt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["resnet20", "resnet50"], default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=None, help="input side (32 or 224 by arch)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: forward and loss under bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and batches")
    parser.add_argument(
        "--input",
        choices=["host", "gpu", "both"],
        default="host",
        help="batches in pinned host memory, copied every step (host), already on the "
        "device (gpu), or both timed one after the other",
    )
    parser.add_argument("--write-folder", metavar="DIR", help="write an image folder and exit")
    parser.add_argument("--classes", type=int, default=2, help="--write-folder: class folders")
    parser.add_argument("--per-class", type=int, default=64, help="--write-folder: images per class")
    parser.add_argument("--side", type=int, default=256, help="--write-folder: image side")
    parser.add_argument(
        "--format", choices=["auto", "jpeg", "png"], default="auto",
        help="--write-folder: jpeg (needs PIL), png, or auto (jpeg where PIL is installed)",
    )
    args = parser.parse_args()

    if args.write_folder:
        start = time.perf_counter()
        fmt = write_folder(args.write_folder, args.classes, args.per_class, args.side, args.format)
        print(
            f"wrote {args.classes} x {args.per_class} {args.side}x{args.side} {fmt} images "
            f"to {args.write_folder} in {time.perf_counter() - start:.1f} s"
        )
        return

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    model = (resnet20() if args.arch == "resnet20" else resnet50()).to(device)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    classes = 10 if args.arch == "resnet20" else 1000
    size = args.size or (32 if args.arch == "resnet20" else 224)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    cuda = device.type == "cuda"
    pin = (lambda t: t.pin_memory()) if cuda else (lambda t: t)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    batches = [
        (
            pin(torch.randn(args.batch, 3, size, size).contiguous(memory_format=layout)),
            pin(torch.randint(0, classes, (args.batch,))),
        )
        for _ in range(4)
    ]
    bf16 = args.precision == "bf16"

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    # Seconds per step with inputs from `source`, after `warmup` untimed steps.
    def timed(source, warmup):
        for i in range(warmup):
            step(*source[i % len(source)])
        sync()
        start = time.perf_counter()
        for i in range(args.iterations):
            loss = step(*source[i % len(source)])
        sync()
        return (time.perf_counter() - start) / args.iterations, loss

    model.train()
    modes = ["host", "gpu"] if args.input == "both" else [args.input]
    seconds = {}
    for n, mode in enumerate(modes):
        source = batches if mode == "host" else [(x.to(device), y.to(device)) for x, y in batches]
        # The first mode warms up cuDNN's algorithm choices; the second needs few steps.
        seconds[mode], loss = timed(source, args.warmup if n == 0 else min(args.warmup, 3))
    first = seconds[modes[0]]
    print(
        json.dumps(
            {
                "framework": "pytorch",
                "arch": args.arch,
                "batch": args.batch,
                "size": size,
                "iterations": args.iterations,
                "precision": args.precision,
                "channels_last": args.channels_last,
                "input": modes[0],
                "images_per_sec": args.batch / first,
                "ms_per_step": 1e3 * first,
                **(
                    {"images_per_sec_gpu_input": args.batch / seconds["gpu"],
                     "ms_per_step_gpu_input": 1e3 * seconds["gpu"]}
                    if len(modes) == 2
                    else {}
                ),
                "final_loss": loss.item(),
                "gpu": torch.cuda.get_device_name(device) if cuda else None,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
                "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            }
        )
    )


if __name__ == "__main__":
    main()
