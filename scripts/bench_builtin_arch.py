#!/usr/bin/env python
"""Training-step cost of candidate denoiser architectures, measured in one run (CPU or GPU).

Compares SVD's own class (diffusers ``UNetSpatioTemporalConditionModel``, tiny configurations,
cross-attention to a learned image token) with dsquare's ``SequenceUNet`` configurations, all on
one training step (forward + backward + AdamW) of 8 sequences x 8 frames of 16x16x4 latents.
Prints seconds per step (median of ``--repeats`` after a warm-up), milliseconds per image and the
ratio to the shipped configuration.

    python scripts/bench_builtin_arch.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.models.builtin import default_configs  # noqa: E402
from backend.models.builtin.config import DenoiserConfig, UNetConfig  # noqa: E402
from backend.models.builtin.denoiser import DenoiserNet  # noqa: E402

B, T, C, S = 8, 8, 4, 16


def svd_unet(channels, attention_levels):
    from diffusers import UNetSpatioTemporalConditionModel

    down = tuple("CrossAttnDownBlockSpatioTemporal" if i in attention_levels else "DownBlockSpatioTemporal"
                 for i in range(len(channels)))
    up = tuple("CrossAttnUpBlockSpatioTemporal" if (len(channels) - 1 - i) in attention_levels else "UpBlockSpatioTemporal"
               for i in range(len(channels)))
    return UNetSpatioTemporalConditionModel(
        sample_size=S, in_channels=2 * C, out_channels=C, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(channels), addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
        layers_per_block=1, cross_attention_dim=128, num_attention_heads=tuple(max(1, c // 32) for c in channels),
        num_frames=T)


def step_svd(net, opt):
    x = torch.randn(B, T, 2 * C, S, S)
    out = net(x, torch.rand(B), torch.randn(B, 1, 128), torch.randn(B, 3)).sample
    out.pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def step_ours(net, opt):
    out = net(torch.randn(B, T, C, S, S), torch.randn(B), torch.randn(B, C, S, S), torch.ones(B),
              elevation=torch.rand(B, T), azimuth=torch.rand(B, T))
    out.pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def timed(fn, net, repeats):
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    fn(net, opt)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(net, opt)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = default_configs()["multiview"]
    cands = {
        "svd-class (32,64,64), attention at lowest level": ("svd", lambda: svd_unet((32, 64, 64), {2})),
        "svd-class (64,128,128), attention at 8x8 and 4x4": ("svd", lambda: svd_unet((64, 128, 128), {1, 2})),
        f"ours shipped {shipped.unet.channels} blocks={shipped.unet.blocks}": ("ours", lambda: DenoiserNet(shipped)),
        "ours (64,128,192) blocks=2, temporal@16 full@8,4": ("ours", lambda: DenoiserNet(DenoiserConfig(
            kind="multiview", unet=UNetConfig(channels=(64, 128, 192), blocks=2, temporal_attention=(0,), full_attention=(1, 2))))),
        "ours (48,128,192) blocks=1, full@8,4": ("ours", lambda: DenoiserNet(DenoiserConfig(
            kind="multiview", unet=UNetConfig(channels=(48, 128, 192), blocks=1, temporal_attention=(), full_attention=(1, 2))))),
    }
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, one step = {B} sequences x {T} frames at {S}x{S}x{C}")
    results = {}
    for name, (kind, build) in cands.items():
        net = build()
        params = sum(p.numel() for p in net.parameters()) / 1e6
        sec = timed(step_svd if kind == "svd" else step_ours, net, args.repeats)
        results[name] = sec
        print(f"{name:55s} {params:5.1f} M params  {sec:6.2f} s/step  {1000 * sec / (B * T):6.1f} ms/image", flush=True)
    ref = [v for k, v in results.items() if k.startswith("ours shipped")][0]
    for name, sec in results.items():
        print(f"ratio to shipped: {name:55s} {sec / ref:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
