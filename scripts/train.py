#!/usr/bin/env python
"""Train the built-in models on CPU (or a GPU when there is one), resumably, within a time budget.

    python scripts/train.py autoencoder --data data/builtin --run runs/ae --minutes 45
    python scripts/train.py encode      --data data/builtin --ae runs/ae/autoencoder.safetensors
    python scripts/train.py multiview   --data data/builtin --run runs/multiview --minutes 120
    python scripts/train.py video       --data data/builtin --run runs/video --minutes 120
    python scripts/train.py export      --ae runs/ae --video runs/video --multiview runs/multiview \\
                                        --out backend/models/builtin/weights

Every training command shows a progress bar, evaluates on held-out renders every ``--eval-minutes``
(learning curve in RUN/log.jsonl, contact sheets RUN/samples_STEP.png), checkpoints to RUN/ckpt.pt
every ``--ckpt-minutes`` and resumes from it when restarted with the same RUN. The learning rate
follows a cosine over the run's progress = max(step / --steps, elapsed / --minutes), so a budget in
minutes is honoured whatever else is running on the machine. At the end the EMA weights are written
to RUN/<model>.safetensors (float16) with the configuration and training facts in the metadata.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import builtin_data as D  # noqa: E402
from backend.models.base import EDMScaling, edm_training_sigmas  # noqa: E402
from backend.models.builtin import SIGMA_MAX, SIGMA_MIN, default_configs  # noqa: E402
from backend.models.builtin.autoencoder import AutoencoderNet, BuiltinAutoencoder  # noqa: E402
from backend.models.builtin.config import AutoencoderConfig, DenoiserConfig, LiftConfig, to_json  # noqa: E402
from backend.models.builtin.denoiser import BuiltinDenoiser, DenoiserNet  # noqa: E402
from backend.models.builtin.metrics import iou, masked_psnr, psnr, silhouette, to_unit  # noqa: E402
from backend.models.builtin.weights_io import (FILES, latent_space_id, load_autoencoder_net,  # noqa: E402
                                               load_denoiser_net, read_metadata, save_network)
from backend.sampling.schedules import karras_sigmas  # noqa: E402
from backend.sampling.sequence import sample_sequences  # noqa: E402


# ------------------------------------------------------------------------------------------ utilities
class RunLog:
    """Append-only json lines in RUN/log.jsonl."""

    def __init__(self, run: Path):
        self.path = run / "log.jsonl"

    def write(self, **rec) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def lr_at(progress: float, base: float, warmup_frac: float = 0.02, decay_frac: float = 0.2) -> float:
    """Warm-up, stable, decay: linear warm-up over the first 2 %, constant, then a linear decay to
    base/20 over the last 20 % of the budget. Until the decay starts, a run's learning-curve prefix is
    independent of its budget, so a run can be compared early and then extended (resumed with a
    larger budget) without restarting."""
    if progress < warmup_frac:
        return base * max(progress / warmup_frac, 0.02)
    if progress < 1.0 - decay_frac:
        return base
    p = (progress - (1.0 - decay_frac)) / decay_frac
    return base * (1.0 - 0.95 * min(p, 1.0))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, step: int, decay: float) -> None:
    d = min(decay, (1.0 + step) / (10.0 + step))
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.mul_(d).add_(p.detach(), alpha=1.0 - d)
    for be, b in zip(ema.buffers(), net.buffers()):
        be.copy_(b)


class Trainer:
    """Step loop with a time budget, progress bar, periodic eval and resumable checkpoints."""

    def __init__(self, args, run: Path, net: torch.nn.Module, lr: float, lr_mult: dict | None = None):
        """lr_mult: {parameter-name prefix: learning-rate multiplier} (e.g. a new module beside warm-started ones)."""
        self.args, self.run = args, run
        self.net = net
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)
        groups: dict[float, list] = {}
        for name, p in net.named_parameters():
            mult = next((m for prefix, m in (lr_mult or {}).items() if name.startswith(prefix)), 1.0)
            groups.setdefault(mult, []).append(p)
        self.opt = torch.optim.AdamW([{"params": ps, "mult": m} for m, ps in groups.items()], lr=lr, weight_decay=0.0,
                                     betas=(0.9, 0.99))
        self.base_lr = lr
        self.step = 0
        self.elapsed = 0.0  # wall-clock training seconds over all sessions
        self.cpu = 0.0  # CPU seconds (all threads) spent in training steps over all sessions
        self.log = RunLog(run)
        self.ckpt = run / "ckpt.pt"
        if self.ckpt.is_file():
            state = torch.load(self.ckpt, map_location="cpu", weights_only=False)
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed, self.cpu = state["step"], state["elapsed"], state.get("cpu", 0.0)
            torch.set_rng_state(state["torch_rng"])
            print(f"[train] resumed {run} at step {self.step} ({self.elapsed / 60:.1f} min trained)")

    def progress(self) -> float:
        """Fraction of the budget used: the furthest of wall minutes, CPU core-hours and steps."""
        p = self.elapsed / (60.0 * self.args.minutes)
        if self.args.cpu_hours:
            p = max(p, self.cpu / (3600.0 * self.args.cpu_hours))
        if self.args.steps:
            p = max(p, self.step / self.args.steps)
        return p

    def save(self) -> None:
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save({"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                    "step": self.step, "elapsed": self.elapsed, "cpu": self.cpu, "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(self.ckpt)

    def loop(self, loss_fn, eval_fn) -> None:
        from tqdm import tqdm

        args = self.args
        bar = tqdm(total=100, desc=f"train {args.cmd}", unit="%", bar_format="{l_bar}{bar}| {n:.1f}/{total}% [{elapsed}<{remaining}] {postfix}")
        bar.update(100 * min(self.progress(), 1.0))
        last_eval = last_ckpt = time.time()
        if self.step == 0 or args.eval_at_start:
            eval_fn(self)
        losses: list[float] = []
        while self.progress() < 1.0:
            t0, c0 = time.time(), time.process_time()
            lr = lr_at(self.progress(), self.base_lr)
            for g in self.opt.param_groups:
                g["lr"] = lr * g.get("mult", 1.0)
            self.net.train()
            loss, parts = loss_fn(self)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            ema_update(self.ema, self.net, self.step, args.ema)
            self.step += 1
            self.elapsed += time.time() - t0
            self.cpu += time.process_time() - c0
            losses.append(float(loss.detach()))
            before = bar.n
            bar.update(max(0.0, 100 * min(self.progress(), 1.0) - before))
            bar.set_postfix_str(f"step {self.step} loss {np.mean(losses[-50:]):.4f} lr {lr:.2e}")
            if self.step % 25 == 0:
                self.log.write(kind="train", step=self.step, elapsed_min=self.elapsed / 60, cpu_hours=self.cpu / 3600, loss=float(np.mean(losses[-25:])),
                               lr=lr, grad_norm=float(gn), **parts)
            if time.time() - last_ckpt > 60 * args.ckpt_minutes:
                self.save()
                last_ckpt = time.time()
            if time.time() - last_eval > 60 * args.eval_minutes:
                eval_fn(self)
                last_eval = time.time()
        bar.close()
        self.save()
        eval_fn(self)


def contact_sheet(rows: list[torch.Tensor], path: Path, scale: int = 1) -> None:
    """rows: tensors [N, 3, H, W] in [0, 1], one image row each -> a PNG."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # [3, rows*H, N*W]
    arr = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path, optimize=True)


def common_args(p: argparse.ArgumentParser, minutes: float, lr: float, batch: int) -> None:
    p.add_argument("--data", default="data/builtin")
    p.add_argument("--run", required=True, help="run folder (checkpoint, log, samples, final weights)")
    p.add_argument("--minutes", type=float, default=minutes, help="wall-clock training budget (resumes count)")
    p.add_argument("--cpu-hours", type=float, default=0.0,
                   help="CPU budget in core-hours of training steps (2 h on 2 cores = 4); robust to a shared machine")
    p.add_argument("--steps", type=int, default=0, help="optional step budget (whichever ends first)")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--eval-minutes", type=float, default=15.0)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--eval-at-start", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------- autoencoder
def cmd_autoencoder(args) -> None:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg = AutoencoderConfig()
    net = AutoencoderNet(cfg).to(args.device)
    val = D.load_split(args.data, "val-multiview", limit=32)["images"][:, :, :, :, :3]  # [32, 8, H, W, 3]
    val_x = D.images_to_tensor(val.reshape(-1, *val.shape[2:]))[::2]  # 128 held-out images
    pool: dict = {"x": None, "loaded": 0.0, "files": 0}
    rng = np.random.default_rng(args.seed)

    def refresh() -> None:
        files = D.shards(args.data, "video") + D.shards(args.data, "multiview")
        if pool["x"] is not None and (len(files) == pool["files"] or time.time() - pool["loaded"] < 600):
            return
        chosen = rng.permutation(len(files))[: args.max_shards]
        imgs = []
        for i in chosen:
            with np.load(files[i]) as d:
                im = d["images"][..., :3]
            imgs.append(im.reshape(-1, *im.shape[2:]))
        pool["x"] = np.concatenate(imgs)
        pool["loaded"], pool["files"] = time.time(), len(files)
        print(f"[autoencoder] training pool: {len(pool['x'])} images from {len(chosen)} of {len(files)} shards")

    trainer = Trainer(args, run, net, args.lr)

    def loss_fn(tr):
        refresh()
        idx = rng.integers(0, len(pool["x"]), args.batch)
        x = D.images_to_tensor(pool["x"][idx]).to(args.device)
        flip = torch.from_numpy(rng.random(args.batch) < 0.5).to(args.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        z = tr.net.encode(x)
        zn = z + args.latent_noise * z.detach().std() * torch.randn_like(z)
        y = tr.net.decode(zn)
        mse = F.mse_loss(y, x)
        l1 = (y - x).abs().mean()
        reg = z.pow(2).mean()
        loss = mse + 0.5 * l1 + args.latent_reg * reg
        return loss, {"mse": float(mse.detach()), "l1": float(l1.detach()), "latent_rms": float(reg.detach().sqrt())}

    def eval_fn(tr):
        tr.ema.eval()
        with torch.no_grad():
            y = torch.cat([tr.ema.decode(tr.ema.encode(c.to(args.device))).clamp(-1, 1).cpu() for c in val_x.split(32)])
        p = psnr(to_unit(y), to_unit(val_x))
        tr.log.write(kind="eval", step=tr.step, elapsed_min=tr.elapsed / 60, cpu_hours=tr.cpu / 3600, psnr_mean=float(p.mean()),
                     psnr_min=float(p.min()))
        print(f"[autoencoder] step {tr.step}: held-out PSNR {float(p.mean()):.2f} dB (min {float(p.min()):.2f})")
        contact_sheet([to_unit(val_x[:16]), to_unit(y[:16])], run / "samples.png", 2)

    trainer.loop(loss_fn, eval_fn)
    # unit-variance latents: statistics of the EMA encoder over training images
    refresh()
    with torch.no_grad():
        sample = D.images_to_tensor(pool["x"][rng.permutation(len(pool["x"]))[:2048]])
        z = torch.cat([trainer.ema.encode(c.to(args.device)).cpu() for c in sample.split(64)])
    final = replace(cfg, shift=float(z.mean()), scale=float(1.0 / z.std()))
    trainer.ema.cfg = final
    space = latent_space_id(final, {k: v for k, v in trainer.ema.state_dict().items()})
    log = trainer.log.read()
    evals = [r for r in log if r["kind"] == "eval"]
    save_network(run / FILES["autoencoder"], "autoencoder", trainer.ema, final, space, step=trainer.step,
                 minutes=round(trainer.elapsed / 60, 1), heldout_psnr=evals[-1]["psnr_mean"], command=" ".join(sys.argv))
    print(f"[autoencoder] wrote {run / FILES['autoencoder']} (latent space {space}, shift {final.shift:.4f}, scale {final.scale:.4f})")


# -------------------------------------------------------------------------------------------- encode
def cmd_encode(args) -> None:
    """Encode every rendered shard that has no up-to-date latent shard yet (incremental, resumable)."""
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    net, meta = load_autoencoder_net(args.ae)
    ae = BuiltinAutoencoder(net, meta["latent_space"], args.device, max_batch=256)
    for split in args.splits.split(","):
        todo = []
        for f in D.shards(args.data, split):
            out = D.latent_shard_path(args.data, split, f)
            if args.force or not out.is_file() or D.latent_space_of(out) != ae.latent_space:
                todo.append((f, out))
        for f, out in tqdm(todo, desc=f"encode {split}", unit="shard"):
            with np.load(f) as d:
                im = d["images"]
                meta_s = {k: d[k] for k in ("azimuth_deg", "elevation_deg", "index")}
            shape = im.shape
            z = ae.encode(D.images_to_tensor(im.reshape(-1, *shape[-3:])))
            D.save_latent_shard(out, z.view(*shape[:-3], *z.shape[1:]), meta_s, ae.latent_space)
        n = len(D.shards(args.data, split))
        print(f"[encode] {split}: {len(todo)} shards encoded, {n} rendered shards in all")


# ---------------------------------------------------------------------------------------- denoisers
def denoiser_config(args, kind: str) -> DenoiserConfig:
    cfg = default_configs()[kind]
    unet = cfg.unet
    if args.channels:
        unet = replace(unet, channels=tuple(int(c) for c in args.channels.split(",")))
    if args.blocks:
        unet = replace(unet, blocks=args.blocks)
    if args.full_attention is not None:
        unet = replace(unet, full_attention=tuple(int(c) for c in args.full_attention.split(",") if c != ""))
    if args.temporal_attention is not None:
        unet = replace(unet, temporal_attention=tuple(int(c) for c in args.temporal_attention.split(",") if c != ""))
    lift = None  # the shipped multi-view model has the 3-D prior; train.py adds it only when asked (--lift)
    if kind == "multiview" and getattr(args, "lift", False):
        lift = LiftConfig()
    unet = replace(unet, cond_channels=lift.channels if lift is not None else 0)
    return replace(cfg, unet=unet, cond_dropout=args.cond_dropout, lift=lift)


def warm_start(net: DenoiserNet, path: str) -> None:
    """Copy a trained network's weights into ``net`` wherever names and shapes match; a wider first
    convolution (new conditioning channels) keeps the old weights and starts the new inputs at zero,
    so the warm-started network computes exactly what the old one did until it learns to use them."""
    old, _ = load_denoiser_net(path, net.cfg.kind)
    new = net.state_dict()
    copied, widened = 0, []
    for k, v in old.state_dict().items():
        if k not in new:
            continue
        if new[k].shape == v.shape:
            new[k] = v.clone()
            copied += 1
        elif k == "unet.conv_in.weight" and new[k].shape[1] > v.shape[1] and new[k].shape[0] == v.shape[0]:
            w = torch.zeros_like(new[k])
            w[:, : v.shape[1]] = v
            new[k] = w
            widened.append(k)
        else:
            raise SystemExit(f"--init {path}: {k} has shape {tuple(v.shape)}, this network {tuple(new[k].shape)}")
    net.load_state_dict(new)
    print(f"[init] {path}: {copied} tensors copied, widened {widened}, "
          f"{len(new) - copied - len(widened)} new tensors left at their initialisation")


def warm_start_facts(path: str) -> dict:
    """What a warm start began from (recorded in the new weight file): its file, steps, minutes, command."""
    meta = read_metadata(path)
    return {"file": Path(path).name, "step": meta.get("step"), "minutes": meta.get("minutes"), "command": meta.get("command")}


def lift_masks(data: str, split: str, n: int) -> torch.Tensor:
    """Silhouette coverage at latent resolution from the renders' alpha: float16 [n, V, h, w] in [0, 1]."""
    out = []
    for f in D.shards(data, split):
        with np.load(f) as d:
            a = torch.from_numpy(d["images"][..., 3]).float().div_(255.0)
        out.append(F.avg_pool2d(a.flatten(0, 1)[:, None], 4).view(*a.shape[:2], a.shape[-2] // 4, a.shape[-1] // 4).half())
        if sum(len(o) for o in out) >= n:
            break
    return torch.cat(out)[:n]


def cmd_denoiser(args) -> None:
    kind = args.cmd
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 17)
    train_split, val_split = (kind, f"val-{kind}")
    data = D.load_latents(args.data, train_split)
    space = data["latent_space"]
    val = D.load_latents(args.data, val_split, latent_space=space)
    val_imgs = D.load_split(args.data, val_split, limit=args.val_items)["images"]
    lat = data["latents"]  # float16 [N, T, C, h, w]
    if args.limit:
        lat = lat[: args.limit]
    N = lat.shape[0]
    print(f"[{kind}] {N} training sequences {tuple(lat.shape[1:])}, latent space {space}")
    cfg = denoiser_config(args, kind)
    (run / "config.json").write_text(json.dumps({"config": json.loads(to_json(cfg)), "latent_space": space,
                                                 "argv": sys.argv}, indent=1))
    net = DenoiserNet(cfg)
    if args.init and not (run / "ckpt.pt").is_file():
        warm_start(net, args.init)
    net = net.to(args.device)
    print(f"[{kind}] {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
    masks = lift_masks(args.data, train_split, N) if cfg.lift is not None else None
    scaling = EDMScaling(cfg.scaling, cfg.sigma_data)
    azr = D.relative_azimuth_rad(data["azimuth_deg"][: N]) if kind == "multiview" else None
    elr = torch.deg2rad(torch.as_tensor(data["elevation_deg"][: N], dtype=torch.float32))
    ae_net, ae_meta = load_autoencoder_net(args.ae)
    if ae_meta["latent_space"] != space:
        raise SystemExit(f"--ae {args.ae} is latent space {ae_meta['latent_space']}, the latents are {space}")
    ae = BuiltinAutoencoder(ae_net, space, args.device)
    trainer = Trainer(args, run, net, args.lr, {"lift.": args.lift_lr_mult} if cfg.lift is not None else None)
    gen = torch.Generator().manual_seed(args.seed + 1)

    def noisy_loss(tr, x0, cond, extra, renders=None):
        B = x0.shape[0]
        sigma = edm_training_sigmas(B, args.p_mean, args.p_std, generator=gen).clamp(SIGMA_MIN, SIGMA_MAX)
        c_skip, c_out, c_in, c_noise = scaling(sigma)
        noise = torch.randn(x0.shape, generator=gen)
        x = x0 + sigma.view(B, 1, 1, 1, 1) * noise
        keep = (torch.rand(B, generator=gen) >= cfg.cond_dropout).float()
        dev = args.device
        out = tr.net(x.to(dev) * c_in.view(B, 1, 1, 1, 1).to(dev), c_noise.to(dev), cond.to(dev), keep.to(dev),
                     renders=renders, **{k: v.to(dev) for k, v in extra.items()})
        target = ((x0 - c_skip.view(B, 1, 1, 1, 1) * x) / c_out.view(B, 1, 1, 1, 1)).to(dev)
        return F.mse_loss(out, target)

    def loss_fn(tr):
        B = args.batch
        idx = torch.from_numpy(rng.integers(0, N, B))
        x0 = lat[idx].float()
        if kind == "multiview":
            shift = torch.from_numpy(rng.integers(0, x0.shape[1], B))  # any view can be the front
            order = (torch.arange(x0.shape[1])[None] + shift[:, None]) % x0.shape[1]
            x0 = torch.stack([x0[b, order[b]] for b in range(B)])
            az = torch.stack([azr[idx[b], order[b]] for b in range(B)])
            az = torch.remainder(az - az[:, :1], 2 * math.pi)
            extra = {"elevation": elr[idx], "azimuth": az}
            if cfg.lift is None:
                return noisy_loss(tr, x0, x0[:, 0], extra), {}
            # the 3-D prior: rendered once, trained directly against the true views (latent and
            # silhouette) and handed to the UNet; the first --lift-warmup steps train it alone
            dev = args.device
            mk = torch.stack([masks[idx[b], order[b]] for b in range(B)]).float().to(dev)
            renders = tr.net.lift(x0[:, 0].to(dev), extra["elevation"].to(dev), az.to(dev))
            aux_latent = F.mse_loss(tr.net.lift.predict_latent(renders), x0.to(dev))
            aux_mask = F.binary_cross_entropy(renders[:, :, -1].clamp(1e-4, 1 - 1e-4), mk)
            aux = args.aux_weight * (aux_latent + 0.5 * aux_mask)
            parts = {"aux_latent": float(aux_latent.detach()), "aux_mask": float(aux_mask.detach())}
            if tr.step < args.lift_warmup:
                return aux, parts
            return noisy_loss(tr, x0, x0[:, 0], extra, renders) + aux, parts
        # video: every k-th step trains the one-image marginal (joint image training)
        if args.image_every and tr.step % args.image_every == args.image_every - 1:
            Bi = B * args.image_batch_mult
            idx = torch.from_numpy(rng.integers(0, N, Bi))
            f = torch.from_numpy(rng.integers(0, lat.shape[1], Bi))
            clip = lat[idx].float()
            x0 = clip[torch.arange(Bi), f][:, None]
            extra = {"frame_index": torch.full((Bi, 1), cfg.seq_len, dtype=torch.long)}
            loss = noisy_loss(tr, x0, clip[:, 0], extra)
            return loss, {"image_loss": float(loss)}
        extra = {"frame_index": torch.arange(x0.shape[1]).expand(B, -1)}
        return noisy_loss(tr, x0, x0[:, 0], extra), {}

    val_lat = val["latents"][: args.val_items].float()
    val_az = D.relative_azimuth_rad(val["azimuth_deg"][: args.val_items])
    val_el = torch.deg2rad(torch.as_tensor(val["elevation_deg"][: args.val_items], dtype=torch.float32))
    val_x = D.images_to_tensor(val_imgs)  # [n, T, 3, H, W]
    fixed_sigmas = torch.tensor([0.3, 1.0, 3.0])

    def eval_fn(tr):
        den = BuiltinDenoiser(tr.ema, space, device=args.device)
        n = val_lat.shape[0]
        # held-out denoising loss at fixed noise levels (deterministic noise)
        g = torch.Generator().manual_seed(123)
        vloss = {}
        with torch.no_grad():
            for s in fixed_sigmas:
                errs = []
                for a in range(0, n, 16):
                    x0 = val_lat[a:a + 16]
                    conds = [_cond(kind, x0[b, 0], val_el[a + b], val_az[a + b]) for b in range(x0.shape[0])]
                    x = x0 + s * torch.randn(x0.shape, generator=g)
                    pred = den.denoise(x, torch.full((x0.shape[0],), float(s)), conds)
                    errs.append((pred - x0).pow(2).mean(dim=(1, 2, 3, 4)))
                vloss[f"{float(s):g}"] = float(torch.cat(errs).mean())
        # samples: held-out IoU / masked PSNR against the true renders
        m = min(n, args.val_samples)
        x0 = val_lat[:m]
        conds = [_cond(kind, x0[b, 0], val_el[b], val_az[b]) for b in range(m)]
        sig = karras_sigmas(args.eval_steps, SIGMA_MIN, SIGMA_MAX)
        xT = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7)) * float(sig[0])
        known = torch.zeros(m, x0.shape[1], dtype=torch.bool)
        known[:, 0] = True
        out = sample_sequences(den, xT, sig, conds=conds, known_mask=known, known_values=x0, max_batch=16)
        dec = to_unit(ae.decode(out.reshape(-1, *out.shape[2:])).view(m, -1, 3, *val_x.shape[-2:]))
        true = to_unit(val_x[:m])
        novel = slice(1, None)
        ious = iou(silhouette(dec[:, novel]), silhouette(true[:, novel])).mean(1)
        mps = masked_psnr(dec[:, novel], true[:, novel]).mean(1)
        rec = {"kind": "eval", "step": tr.step, "elapsed_min": tr.elapsed / 60, "cpu_hours": tr.cpu / 3600, "val_loss": vloss,
               "iou": float(ious.mean()), "masked_psnr": float(mps.mean())}
        if kind == "video":
            d_true = (true[:, 1:] - true[:, :-1]).abs().mean()
            d_pred = (dec[:, 1:] - dec[:, :-1]).abs().mean()
            rec["motion_ratio"] = float(d_pred / d_true.clamp_min(1e-8))
        tr.log.write(**rec)
        print(f"[{kind}] step {tr.step} ({tr.elapsed / 60:.1f} min): held-out IoU {rec['iou']:.3f}, masked PSNR "
              f"{rec['masked_psnr']:.2f} dB, val loss {vloss}" + (f", motion ratio {rec['motion_ratio']:.2f}" if kind == "video" else ""))
        rows = []
        for b in range(min(m, 4)):
            rows += [true[b], dec[b]]
        contact_sheet(rows, run / f"samples_{tr.step:06d}.png")

    trainer.loop(loss_fn, eval_fn)
    log = trainer.log.read()
    last = [r for r in log if r["kind"] == "eval"][-1]
    trains = [r for r in log if r["kind"] == "train"]
    save_network(run / FILES[kind], kind, trainer.ema, cfg, space, step=trainer.step, minutes=round(trainer.elapsed / 60, 1),
                 final_train_loss=trains[-1]["loss"] if trains else None, heldout=last, command=" ".join(sys.argv),
                 **({"warm_start": warm_start_facts(args.init)} if args.init else {}))
    print(f"[{kind}] wrote {run / FILES[kind]}")


def _cond(kind, latent, elevation, azimuth):
    from backend.models.base import ModelSet

    if kind == "multiview":
        return ModelSet.multiview_cond(latent, elevation, azimuth)
    return ModelSet.video_cond(latent)


# ------------------------------------------------------------------------------------------ snapshot
def cmd_snapshot(args) -> None:
    """Write RUN/<model>.safetensors from a run's latest checkpoint (EMA weights), e.g. to evaluate a
    run that is still training; the run itself is not touched."""
    run = Path(args.run)
    cfg_file = json.loads((run / "config.json").read_text())
    from backend.models.builtin.config import denoiser_config_from_json

    cfg = denoiser_config_from_json(json.dumps(cfg_file["config"]))
    net = DenoiserNet(cfg)
    state = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)
    net.load_state_dict(state["ema"])
    out = Path(args.out) if args.out else run / FILES[cfg.kind]
    save_network(out, cfg.kind, net, cfg, cfg_file["latent_space"], step=state["step"],
                 minutes=round(state["elapsed"] / 60, 1), snapshot=True, command=" ".join(cfg_file["argv"]))
    print(f"[snapshot] {run} step {state['step']} -> {out}")


# -------------------------------------------------------------------------------------------- export
def cmd_export(args) -> None:
    """Copy the three runs' weight files into the shipped folder, optionally setting the denoisers'
    default guidance (chosen on validation data with scripts/tune_builtin.py) in their configuration."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    srcs = {"autoencoder": Path(args.ae) / FILES["autoencoder"], "video": Path(args.video) / FILES["video"],
            "multiview": Path(args.multiview) / FILES["multiview"]}
    spaces = {k: read_metadata(p)["latent_space"] for k, p in srcs.items()}
    if len(set(spaces.values())) != 1:
        raise SystemExit(f"the three networks were trained in different latent spaces: {spaces}")
    import shutil

    total = 0
    for k, p in srcs.items():
        guidance = {"video": args.guidance_video, "multiview": args.guidance_multiview}.get(k)
        if guidance is None:
            shutil.copyfile(p, out / FILES[k])
        else:
            net, meta = load_denoiser_net(p, k)
            cfg = replace(net.cfg, guidance=float(guidance))
            facts = {m: v for m, v in meta.items() if m not in ("format", "model", "config", "latent_space")}
            save_network(out / FILES[k], k, net, cfg, meta["latent_space"], **facts)
        size = (out / FILES[k]).stat().st_size
        total += size
        print(f"[export] {p} -> {out / FILES[k]} ({size / 1e6:.1f} MB)" + (f", guidance {guidance}" if guidance else ""))
    print(f"[export] total {total / 1e6:.1f} MB")
    if total > 40e6:
        raise SystemExit("shipped weights exceed 40 MB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("autoencoder", help="train the autoencoder on rendered images")
    common_args(p, minutes=45, lr=4e-4, batch=16)
    p.add_argument("--max-shards", type=int, default=40, help="training pool: at most this many shards (2000 images each) in memory")
    p.add_argument("--latent-noise", type=float, default=0.05)
    p.add_argument("--latent-reg", type=float, default=1e-4)
    p = sub.add_parser("encode", help="encode rendered splits into latents with a trained autoencoder")
    p.add_argument("--data", default="data/builtin")
    p.add_argument("--ae", required=True)
    p.add_argument("--splits", default="val-video,val-multiview,eval,video,multiview")
    p.add_argument("--force", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    for kind in ("video", "multiview"):
        p = sub.add_parser(kind, help=f"train the {kind} denoiser on latents")
        common_args(p, minutes=120, lr=2e-4, batch=8)
        p.add_argument("--ae", required=True, help="the autoencoder the latents came from (for held-out decoding)")
        p.add_argument("--channels", default="")
        p.add_argument("--blocks", type=int, default=0)
        p.add_argument("--full-attention", default=None)
        p.add_argument("--temporal-attention", default=None)
        p.add_argument("--cond-dropout", type=float, default=0.1)
        p.add_argument("--p-mean", type=float, default=-0.4)
        p.add_argument("--p-std", type=float, default=1.4)
        p.add_argument("--image-every", type=int, default=6 if kind == "video" else 0)
        p.add_argument("--image-batch-mult", type=int, default=4)
        p.add_argument("--val-items", type=int, default=64)
        p.add_argument("--val-samples", type=int, default=32)
        p.add_argument("--eval-steps", type=int, default=16)
        p.add_argument("--limit", type=int, default=0, help="use only the first N training sequences")
        p.add_argument("--init", default="", help="warm start from a weight file of this kind (matching tensors)")
        if kind == "multiview":
            p.add_argument("--lift", action="store_true",
                           help="add the 3-D prior (front view lifted to a volume, rendered into every view)")
            p.add_argument("--lift-warmup", type=int, default=0, help="train only the lift for the first N steps")
            p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the lift's direct losses")
            p.add_argument("--lift-lr-mult", type=float, default=5.0, help="the lift's learning rate over --lr")
    p = sub.add_parser("snapshot", help="write a running denoiser run's current EMA weights to a weight file")
    p.add_argument("--run", required=True)
    p.add_argument("--out", default=None)
    p = sub.add_parser("export", help="copy finished runs' weights into the shipped weights folder")
    p.add_argument("--ae", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--multiview", required=True)
    p.add_argument("--out", default="backend/models/builtin/weights")
    p.add_argument("--guidance-video", type=float, default=None)
    p.add_argument("--guidance-multiview", type=float, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "autoencoder":
        if args.threads:
            torch.set_num_threads(args.threads)
        cmd_autoencoder(args)
    elif args.cmd == "encode":
        cmd_encode(args)
    elif args.cmd in ("video", "multiview"):
        cmd_denoiser(args)
    elif args.cmd == "snapshot":
        cmd_snapshot(args)
    else:
        cmd_export(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
