#!/usr/bin/env python
"""Speed of stage one at real scale: SVD-XT (rows) + SV3D_p (columns) composed by the Diffusion² sampler.

Builds the two networks with random weights (timing does not depend on the weights; nothing is
downloaded), wraps them in the real adapters (``SVDDenoiser`` / ``SV3DDenoiser``: EDM scaling,
CLIP + VAE conditioning, classifier-free guidance, max_batch chunking) and measures

  * one composed step: both models on the whole V x F matrix (each with its unconditional pass),
  * stage one: ``sample_matrix`` with N steps and VRS on (the paper: 21 views x 25 frames,
    576 x 576, 50 steps, the first 10 steps repeated once),
  * decoding the matrix with SVD-XT's temporal decoder,

and prints seconds, the network FLOPs (counted exactly per network call with PyTorch's
FlopCounterMode on the meta device), achieved TFLOP/s and the share of the GPU's peak.

    python scripts/bench_sampler.py                       # CUDA: --config paper, bf16
    python scripts/bench_sampler.py --config cpu          # CPU: reduced widths and sizes, a few minutes
    python scripts/bench_sampler.py --config paper --count-only   # FLOPs of the paper config, no run

Results also go to ``out/bench_sampler.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

CONFIGS = {
    # the paper's stage one
    "paper": dict(arch="full", views=21, frames=25, resolution=576, steps=50, vrs_steps=10, vrs_repeats=2),
    # 2 CPU cores: the same topology at a fifth of the width, 64 px, fewer views, frames and steps
    "cpu": dict(arch="reduced", views=4, frames=5, resolution=64, steps=6, vrs_steps=2, vrs_repeats=2),
}

# Dense bf16/fp16 tensor-core peaks (TFLOP/s) by device name fragment.
PEAK_TFLOPS = [("H200", 989.4), ("H100 SXM", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
               ("A100", 312.0), ("L40S", 362.0), ("A6000", 154.8), ("4090", 165.2)]

SVD_VAE_CONFIG = dict(down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                      layers_per_block=2, latent_channels=4)
VIT_H_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


def arch_params(arch: str) -> tuple[dict, dict, dict, dict]:
    """(SVD-XT UNet kwargs, SV3D_p network params, VAE kwargs, CLIP vision kwargs) of an architecture."""
    from backend.models.sv3d import SV3D_P_PARAMS

    if arch == "full":
        svd = dict(num_frames=25)  # diffusers' defaults are SVD-XT's architecture
        return svd, dict(SV3D_P_PARAMS), SVD_VAE_CONFIG, VIT_H_CONFIG
    mc, ctx = 64, 1024
    svd = dict(block_out_channels=(mc, 2 * mc, 4 * mc, 4 * mc), num_attention_heads=(2, 4, 8, 8),
               cross_attention_dim=ctx, num_frames=25)
    sv3d = dict(SV3D_P_PARAMS, model_channels=mc, num_head_channels=32, context_dim=ctx)
    vae = dict(down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
               layers_per_block=1, latent_channels=4)
    clip = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                patch_size=16, projection_dim=ctx)
    return svd, sv3d, vae, clip


def build_nets(arch: str, device: str, dtype: torch.dtype, meta: bool = False):
    """Random-weight SVD-XT and SV3D_p networks (VideoUNet / SV3DNet) on ``device`` (or meta)."""
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    from backend.models.sgm_convert import build_diffusers_unet, parse_sgm_params
    from backend.models.sv3d import SV3D_VECTOR_WIDTHS, SV3DNet
    from backend.models.svd import SVD_VECTOR_WIDTHS
    from backend.models.video_unet import VideoUNet

    svd_kw, sv3d_params, _, _ = arch_params(arch)
    target = "meta" if meta else device
    with torch.device(target):
        svd_unet = UNetSpatioTemporalConditionModel(**svd_kw)
    sv3d_unet = build_diffusers_unet(parse_sgm_params(sv3d_params), SV3D_VECTOR_WIDTHS[0], device=target)
    nets = []
    for unet, cls, widths in ((svd_unet, VideoUNet, SVD_VECTOR_WIDTHS), (sv3d_unet, SV3DNet, SV3D_VECTOR_WIDTHS)):
        unet = unet.to(target)  # AlphaBlender's legacy constructor ignores the device context
        if not meta:
            unet = torch.nn.Module.to(unet, dtype)  # (diffusers' .to warns about fp32 modules it lacks)
        unet.set_attn_processor(AttnProcessor2_0())
        nets.append(cls(unet, widths).eval())
    return nets


def count_flops(arch: str, seq_len: int, latent_hw: int, which: int) -> int:
    """FLOPs of one network call on one sequence of ``seq_len`` frames (0: SVD-XT, 1: SV3D_p)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_nets(arch, "meta", torch.float32, meta=True)[which]
    with torch.device("meta"):
        x = torch.zeros(seq_len, net.in_channels, latent_hw, latent_hw)
        ctx = torch.zeros(seq_len, 1, net.context_dim)
        vec = torch.zeros(seq_len, len(net.vector_widths))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net.run(x, torch.zeros(seq_len), ctx, vec, seq_len)
    return int(counter.get_total_flops())


def build_model_set(arch: str, device: str, dtype: torch.dtype, resolution: int, views: int, frames: int,
                    max_batch, guidance: bool):
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from backend.models.guidance import Guidance
    from backend.models.memory import auto_max_batch
    from backend.models.stability_encoders import ClipImageEncoder, ConditionEncoder, SVDAutoencoder
    from backend.models.sv3d import SV3D_GUIDANCE, SV3DDenoiser
    from backend.models.svd import SVD_XT_GUIDANCE, SVDDenoiser

    _, _, vae_kw, clip_kw = arch_params(arch)
    video_net, mv_net = build_nets(arch, device, dtype)
    with torch.device(device):
        vae = torch.nn.Module.to(AutoencoderKLTemporalDecoder(**vae_kw), device=device, dtype=dtype)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_kw)).to(device=device, dtype=dtype)
    ae = SVDAutoencoder(vae, (resolution, resolution), decode_chunk=8)
    encoder = ConditionEncoder(ClipImageEncoder(clip), ae)
    hw = ae.latent_shape[1:]
    if max_batch == "auto":
        if torch.device(device).type == "cuda":
            vb = auto_max_batch(video_net.unet, frames, hw, device, dtype, what="SVD-XT")
            mb = auto_max_batch(mv_net.unet, views, hw, device, dtype, what="SV3D_p")
        else:
            vb = mb = None
    else:
        vb = mb = None if max_batch in (None, "none") else int(max_batch)
    none = Guidance("none")
    video = SVDDenoiser(video_net, encoder, latent_shape=ae.latent_shape, seq_len=frames, max_frames=frames,
                        guidance=SVD_XT_GUIDANCE if guidance else none, max_batch=vb)
    multiview = SV3DDenoiser(mv_net, encoder, latent_shape=ae.latent_shape, seq_len=views, max_frames=views,
                             guidance=SV3D_GUIDANCE if guidance else none, max_batch=mb)
    return ae, video, multiview


def conditions(ae, views: int, frames: int, resolution: int, device: str):
    from backend.models.base import ModelSet

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(max(views, frames), 3, resolution, resolution, generator=g) * 2 - 1
    lat = ae.encode(imgs).cpu()
    el = torch.full((views,), math.radians(10.0))
    az = torch.arange(views) * 2 * math.pi / views
    video_conds = [ModelSet.video_cond(lat[v], imgs[v]) for v in range(views)]
    mv_conds = [ModelSet.multiview_cond(lat[f], el, az, imgs[f]) for f in range(frames)]
    return video_conds, mv_conds


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_tflops(device: str) -> tuple[float | None, str]:
    if torch.device(device).type != "cuda":
        return None, "CPU (no peak figure)"
    name = torch.cuda.get_device_name()
    for frag, peak in PEAK_TFLOPS:
        if frag in name:
            return peak, name
    return None, name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), help="paper (default on CUDA) or cpu (default on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    for name in ("views", "frames", "resolution", "steps", "vrs_steps", "vrs_repeats"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, help="override the config's value")
    ap.add_argument("--max-batch", default="auto", help="sequences per network call: auto | none | N")
    ap.add_argument("--no-guidance", action="store_true", help="conditional pass only (half the work)")
    ap.add_argument("--no-stage", action="store_true", help="time one composed step only")
    ap.add_argument("--count-only", action="store_true", help="count FLOPs only (meta device; no run)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", default="out/bench_sampler.json")
    args = ap.parse_args(argv)

    from backend.models.memory import resolve_dtype
    from backend.sampling.compose import VRS, sample_matrix
    from backend.sampling.schedules import karras_sigmas, logistic_weight

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_name = args.config or ("paper" if torch.device(args.device).type == "cuda" else "cpu")
    cfg = dict(CONFIGS[cfg_name])
    for name in ("views", "frames", "resolution", "steps", "vrs_steps", "vrs_repeats"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    V, F, R, N = cfg["views"], cfg["frames"], cfg["resolution"], cfg["steps"]
    guidance = not args.no_guidance
    hw = R // 8
    evals = N + min(cfg["vrs_steps"], N) * (cfg["vrs_repeats"] - 1)
    from backend.models.sv3d import SV3D_GUIDANCE
    from backend.models.svd import SVD_XT_GUIDANCE

    # network passes per sequence: 2 where classifier-free guidance is active (it is not for a 2-view triangle)
    mult_rows = 2 if guidance and SVD_XT_GUIDANCE.active(F) else 1
    mult_cols = 2 if guidance and SV3D_GUIDANCE.active(V) else 1

    print(f"[bench] config {cfg_name}: {V} views x {F} frames, {R}x{R} px ({hw}x{hw} latent), {N} steps, "
          f"VRS {cfg['vrs_steps']}x{cfg['vrs_repeats']} -> {evals} composed evaluations, guidance {guidance}")
    t = time.perf_counter()
    flops_svd = count_flops(cfg["arch"], F, hw, 0)  # one SVD-XT sequence (a row)
    flops_sv3d = count_flops(cfg["arch"], V, hw, 1)  # one SV3D_p sequence (a column)
    step_flops = mult_rows * V * flops_svd + mult_cols * F * flops_sv3d
    print(f"[bench] network FLOPs: SVD-XT row {_fmt(flops_svd)}, SV3D_p column {_fmt(flops_sv3d)}, "
          f"composed step {_fmt(step_flops)}, stage one {_fmt(evals * step_flops)} "
          f"(counted in {time.perf_counter() - t:.1f} s)")
    result = dict(config=cfg_name, settings=cfg, guidance=guidance, device=args.device,
                  flops=dict(svd_row=flops_svd, sv3d_column=flops_sv3d, composed_step=step_flops,
                             stage_one=evals * step_flops))
    from backend.models.memory import UNetShape, max_batch as fit_batch, sequence_bytes

    metas = build_nets(cfg["arch"], "meta", torch.float32, meta=True)
    weights_gib = sum(sum(p.numel() for p in n.parameters()) for n in metas) * 2 / 2**30
    est = [sequence_bytes(UNetShape.of(n.unet), t, (hw, hw), 2) for n, t in zip(metas, (F, V))]
    fits = [fit_batch(80 * 2**30 - int(weights_gib * 2**30), e, reserve_bytes=2 * 2**30) for e in est]
    result["memory_estimate"] = dict(weights_bf16_gib=weights_gib, svd_row_gib=est[0] / 2**30,
                                     sv3d_column_gib=est[1] / 2**30, max_batch_80gib=fits)
    print(f"[bench] memory estimate (bf16): UNet weights {weights_gib:.1f} GiB; activations per SVD-XT row "
          f"{est[0] / 2**30:.2f} GiB, per SV3D_p column {est[1] / 2**30:.2f} GiB -> on an 80 GiB GPU "
          f"max_batch {fits[0]} rows / {fits[1]} columns per call ({mult_rows * V} / {mult_cols * F} sequences per step)")
    peak, device_name = peak_tflops(args.device)
    result["device_name"], result["peak_tflops"] = device_name, peak
    ref_name, ref_peak = (device_name, peak) if peak else ("an H100 SXM (dense bf16)", 989.4)
    print(f"[bench] on {ref_name}, stage one at 100% of {ref_peak:.0f} TFLOP/s would take "
          f"{evals * step_flops / (ref_peak * 1e12):.0f} s; at 50%: {2 * evals * step_flops / (ref_peak * 1e12):.0f} s")
    if args.count_only:
        return _write(args.out, result)

    dtype = resolve_dtype(args.dtype, args.device)
    t = time.perf_counter()
    ae, video, multiview = build_model_set(cfg["arch"], args.device, dtype, R, V, F, args.max_batch, guidance)
    sync(args.device)
    result.update(dtype=str(dtype).replace("torch.", ""), build_s=time.perf_counter() - t,
                  max_batch=dict(video=video.max_batch, multiview=multiview.max_batch))
    print(f"[bench] built on {args.device} ({result['dtype']}) in {result['build_s']:.1f} s; "
          f"max_batch video {video.max_batch}, multi-view {multiview.max_batch}")

    if torch.device(args.device).type == "cuda":  # the activation estimate against the allocator's peak
        from backend.models.memory import measure_sequence_bytes

        def run_rows(n):
            net = video.net
            x = torch.zeros(n * F, net.in_channels, hw, hw, device=args.device)
            with torch.no_grad():
                net.run(x, torch.zeros(n * F, device=args.device),
                        torch.zeros(n * F, 1, net.context_dim, device=args.device),
                        torch.zeros(n * F, len(net.vector_widths), device=args.device), F)

        measured = measure_sequence_bytes(run_rows, (1, 2), args.device)
        result["measured_svd_row_gib"] = measured / 2**30
        print(f"[bench] measured activations per SVD-XT row: {measured / 2**30:.2f} GiB "
              f"(estimate {result['memory_estimate']['svd_row_gib']:.2f} GiB)")

    t = time.perf_counter()
    video_conds, mv_conds = conditions(ae, V, F, R, args.device)
    for j, c in enumerate(video_conds):
        video.prepare(c, F, f"video_conds[{j}]")
    for j, c in enumerate(mv_conds):
        multiview.prepare(c, V, f"multiview_conds[{j}]")
    sync(args.device)
    result["conditioning_s"] = time.perf_counter() - t
    print(f"[bench] conditioning (CLIP + VAE of {V + F} images): {result['conditioning_s']:.2f} s")

    sigmas = karras_sigmas(N, 0.002, 700.0)
    gen = torch.Generator().manual_seed(0)
    x_T = (torch.randn(V, F, *ae.latent_shape, generator=gen) * float(sigmas[0])).to(args.device)
    common = dict(video_conds=video_conds, multiview_conds=mv_conds, weight=logistic_weight())

    def one_step():
        return sample_matrix(video, multiview, x_T, sigmas[:2].clone().index_fill_(0, torch.tensor([1]), 0.0),
                             **common)

    one_step()  # warm-up (kernel selection, allocator)
    sync(args.device)
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t, cpu = time.perf_counter(), time.process_time()
    one_step()
    sync(args.device)
    step_s = time.perf_counter() - t
    result["composed_step_s"], result["composed_step_cpu_s"] = step_s, time.process_time() - cpu
    result["composed_step_tflops"] = step_flops / step_s / 1e12
    print(f"[bench] one composed step: {step_s:.2f} s, {_tflops(result['composed_step_tflops'])}"
          + (f" ({100 * result['composed_step_tflops'] / peak:.0f}% of peak)" if peak else ""))

    if not args.no_stage:
        seqs = video.sequences + multiview.sequences
        bar = tqdm(total=N, desc="stage one", unit="step")
        t, cpu = time.perf_counter(), time.process_time()
        out = sample_matrix(video, multiview, x_T, sigmas, vrs=VRS(cfg["vrs_steps"], cfg["vrs_repeats"]),
                            generator=torch.Generator().manual_seed(1), on_step=lambda i, n, x0: bar.update(1),
                            **common)
        sync(args.device)
        stage_s = time.perf_counter() - t
        result["stage_one_cpu_s"] = time.process_time() - cpu
        bar.close()
        ran = video.sequences + multiview.sequences - seqs
        expected = evals * (mult_rows * V + mult_cols * F)
        assert ran == expected, f"expected {expected} sequences through the networks, ran {ran}"
        result["stage_one_s"] = stage_s
        result["stage_one_tflops"] = evals * step_flops / stage_s / 1e12
        print(f"[bench] stage one: {stage_s:.1f} s ({stage_s / 60:.2f} min), {_tflops(result['stage_one_tflops'])}"
              + (f" ({100 * result['stage_one_tflops'] / peak:.0f}% of peak)" if peak else "")
              + f"; {ran} sequences through the networks; process CPU time {result['stage_one_cpu_s']:.0f} s "
              f"on {torch.get_num_threads()} threads")
        t = time.perf_counter()
        for v in range(V):
            ae.decode(out[v])
        sync(args.device)
        result["decode_s"] = time.perf_counter() - t
        print(f"[bench] decode {V}x{F} frames (chunks of {ae.decode_chunk}): {result['decode_s']:.1f} s")
    if torch.device(args.device).type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"[bench] peak GPU memory (since the timed step): {result['peak_memory_gib']:.1f} GiB")
    return _write(args.out, result)


def _fmt(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _tflops(x: float) -> str:
    return f"{x:.1f} TFLOP/s" if x >= 1 else f"{x * 1e3:.1f} GFLOP/s"


def _write(path: str, result: dict) -> int:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2))
    print(f"[bench] wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
