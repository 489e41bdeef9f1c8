#!/usr/bin/env python3
"""Runs the workloads of `cargo xtask bench` in PyTorch (and ResNet-50
inference in ONNX Runtime), interleaved with ours in one run, and prints the
ratio ours/theirs for each line, and the peak memory of ours and of the
faster PyTorch layout, each measured in a process of its own. Not part of CI.

    pip install torch torchvision onnxruntime onnx
    python3 scripts/bench_peers.py [--runs 5] [--only NAME]

Each peer is timed like ours: 2 threads, fp32, one warm-up, median of runs.
For PyTorch both NCHW and channels-last are timed and the faster is the peer.
The ImageNet data lines run on the same JPEG files as ours (written by
`cargo xtask bench-jpegs`): PIL's decoder (libjpeg-turbo) on one thread,
the paper's augmentation as torchvision's transforms on PIL images on one
thread, and a torch DataLoader with 2 worker processes for the loader.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BasicBlockA(nn.Module):
    """The paper's CIFAR basic block with the option-A (zero-pad) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            s = F.pad(s, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + s)


def cifar_resnet(depth):
    n = (depth - 2) // 6
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for i, width in enumerate([16, 32, 64]):
        for j in range(n):
            layers.append(BasicBlockA(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def model(arch):
    if arch.startswith("resnet") and int(arch[6:]) in (20, 32, 44, 56, 110, 1202):
        return cifar_resnet(int(arch[6:]))
    import torchvision

    return getattr(torchvision.models, arch)()


def median_seconds(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_seconds(kind, arch, batch, side, runs, channels_last):
    net = model(arch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch, 3, side, side).to(memory_format=fmt)
    if kind == "forward":
        net.eval()

        def step():
            with torch.no_grad():
                net(x)

        return median_seconds(step, runs)
    net.train()
    labels = torch.arange(batch) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), labels).backward()
        opt.step()

    return median_seconds(step, runs)


def onnx_seconds(arch, batch, side, runs):
    import onnxruntime as ort

    net = model(arch).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(net, torch.randn(batch, 3, side, side), path, input_names=["x"], dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        x = torch.randn(batch, 3, side, side).numpy()
        return median_seconds(lambda: sess.run(None, {"x": x}), runs)


PCA_EIGVAL = [0.2175, 0.0188, 0.0045]
PCA_EIGVEC = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
JPEG_BATCHES_PER_RUN = 4  # as ours: IMAGENET_BATCHES_PER_RUN in crates/bench/src/lib.rs


def jpeg_files(tmp):
    """The loader workloads' 64 JPEGs, written by ours into `tmp`."""
    subprocess.run(["cargo", "xtask", "bench-jpegs", tmp, "--images", "64"], cwd=ROOT, check=True,
                   capture_output=True)
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(tmp) for f in fs if f.endswith(".jpg"))


def paper_augmentation():
    """The paper's training augmentation in torchvision: shorter side in [256, 480] (bilinear,
    antialiased), random 224 crop, flip, AlexNet's PCA lighting, torchvision's normalisation."""
    from torchvision.transforms import v2

    eigvec, eigval = torch.tensor(PCA_EIGVEC), torch.tensor(PCA_EIGVAL)

    def lighting(x):
        return x + (eigvec @ (torch.randn(3) * 0.1 * eigval))[:, None, None]

    return v2.Compose([
        v2.RandomShortestSize(list(range(256, 481))), v2.RandomCrop(224), v2.RandomHorizontalFlip(),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Lambda(lighting),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def open_rgb(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def jpeg_seconds(kind, batch, runs):
    """Seconds per `batch` images of the ImageNet data line `kind` (decode, augment, loader)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = jpeg_files(tmp)
        if kind == "decode":
            with torch_threads(1):
                return median_seconds(lambda: [open_rgb(f) for f in files[:batch]], runs)
        transform = paper_augmentation()
        if kind == "augment":
            images = [open_rgb(f) for f in files[:batch]]
            with torch_threads(1):
                return median_seconds(lambda: [transform(i) for i in images], runs)
        from torchvision.datasets import ImageFolder

        loader = torch.utils.data.DataLoader(
            ImageFolder(tmp, transform), batch_size=batch, shuffle=True, num_workers=2,
            persistent_workers=True, drop_last=True)

        def batches():
            while True:
                yield from loader

        stream = batches()

        def pull():
            for _ in range(JPEG_BATCHES_PER_RUN):
                next(stream)

        return median_seconds(pull, runs) / JPEG_BATCHES_PER_RUN


class torch_threads:
    """PyTorch's intra-op threads set to `n` inside a `with` block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *_):
        torch.set_num_threads(self.before)


def peak_rss_mib():
    """Peak resident memory of this process in MiB (Linux), as `cargo xtask bench` reports it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_peak_rss(name, channels_last):
    """Peak memory of PyTorch running workload `name` in a fresh process, as ours runs."""
    args = [sys.executable, __file__, "--rss-of", name] + (["--channels-last"] if channels_last else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def ours(name, runs):
    """Our measurement of workload `name`, and the FP32 FMA peak (GFLOP/s) `cargo xtask bench`
    measured on this machine before it (its first JSON line)."""
    out = subprocess.run(
        ["cargo", "xtask", "bench", "--json", "--only", name, "--runs", str(runs)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]), json.loads(lines[0]).get("peak_gflops")


WORKLOADS = [
    ("train_step/resnet20/b128", "train", "resnet20", 128, 32),
    ("forward/resnet20/b128", "forward", "resnet20", 128, 32),
    ("train_step/resnet110/b128", "train", "resnet110", 128, 32),
    ("forward/resnet50/b1", "forward", "resnet50", 1, 224),
    ("forward/resnet50/b16", "forward", "resnet50", 16, 224),
    ("train_step/resnet18/b16", "train", "resnet18", 16, 224),
    ("decode/imagenet-jpeg/1-thread", "decode", "-", 32, 224),
    ("augment/imagenet/1-thread", "augment", "-", 32, 224),
    ("loader/imagenet-jpeg/b32", "loader", "-", 32, 224),
]
JPEG_PEERS = {
    "decode": "PIL (libjpeg-turbo)",
    "augment": "torchvision on PIL",
    "loader": "DataLoader, 2 workers",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only")
    ap.add_argument("--rss-of", help=argparse.SUPPRESS)
    ap.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_of:
        _, kind, arch, batch, side = next(w for w in WORKLOADS if w[0] == args.rss_of)
        torch_seconds(kind, arch, batch, side, 2, args.channels_last)
        print(peak_rss_mib())
        return
    print(f"{'workload':<28} {'ours img/s':>11} {'peer':>22} {'peer img/s':>11} {'ours/peer':>9}")
    peak_printed = False
    for name, kind, arch, batch, side in WORKLOADS:
        if args.only and args.only != name:
            continue
        mine, peak = ours(name, args.runs)
        if not peak_printed and peak:
            print(f"(this machine's FP32 FMA peak, 2 threads, measured by cargo xtask bench: {peak:.0f} GFLOP/s)")
            peak_printed = True
        if kind in JPEG_PEERS:
            peers = {JPEG_PEERS[kind]: jpeg_seconds(kind, batch, args.runs)}
        else:
            peers = {
                "pytorch NCHW": torch_seconds(kind, arch, batch, side, args.runs, False),
                "pytorch channels-last": torch_seconds(kind, arch, batch, side, args.runs, True),
            }
        if kind == "forward" and arch == "resnet50":
            try:
                peers["onnxruntime"] = onnx_seconds(arch, batch, side, args.runs)
            except ImportError:
                print("  (onnxruntime not installed: skipped)", file=sys.stderr)
        peer, seconds = min(peers.items(), key=lambda kv: kv[1])
        theirs = batch / seconds
        print(f"{name:<28} {mine['images_per_sec']:>11.1f} {peer:>22} {theirs:>11.1f} {mine['images_per_sec'] / theirs:>9.2f}")
        if mine.get("gflops"):
            print(f"{'':<28} ours {mine['gflops']:.0f} GFLOP/s, {100 * mine.get('peak_fraction', float('nan')):.0f}% of peak")
        if peer.startswith("pytorch"):
            rss = torch_peak_rss(name, peer.endswith("channels-last"))
            print(f"{'':<28} peak memory MiB: ours {mine.get('peak_rss_mib') or float('nan'):.0f}, {peer} {rss:.0f}")
        for other, s in peers.items():
            if other != peer:
                print(f"{'':<28} {'':>11} {other:>22} {batch / s:>11.1f}")


if __name__ == "__main__":
    main()
