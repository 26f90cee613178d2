"""Where the real models' weights come from: a local checkpoints folder or the Hugging Face cache.

Layout of ``--checkpoints DIR`` (every entry optional; what is missing is looked up on the Hub):

    DIR/
      svd-xt/                 diffusers-format SVD-XT (model_index.json, unet/, vae/, image_encoder/ ...),
                              i.e. a copy of stabilityai/stable-video-diffusion-img2vid-xt
      sv3d_p.safetensors      Stability's single-file SV3D_p (from stabilityai/sv3d)

Also accepted: ``DIR`` itself being the diffusers SVD folder, and the folder names
``stable-video-diffusion-img2vid-xt`` / ``svd``. Anything not found locally is resolved through the
Hugging Face cache (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` nothing is downloaded and a missing
model is refused with an error that says where it was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from backend.errors import InvalidInput

SVD_XT_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
SV3D_REPO = "stabilityai/sv3d"
SV3D_P_FILE = "sv3d_p.safetensors"
SVD_FOLDER_NAMES = ("svd-xt", "stable-video-diffusion-img2vid-xt", "svd")


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (nothing may be downloaded)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_diffusers_folder(path: Path) -> bool:
    return (path / "unet" / "config.json").is_file()


def resolve_svd(checkpoints: str | None, override: str | None = None) -> tuple[str, str]:
    """(source, how) for SVD: a local diffusers folder or a Hub repo id.

    override: an explicit folder or repo id (option ``svd``)."""
    if override:
        p = Path(override).expanduser()
        if p.exists():
            if not _is_diffusers_folder(p):
                raise InvalidInput("svd", f"{p} is not a diffusers-format SVD folder (no unet/config.json)")
            return str(p), "local folder"
        return override, "hub"
    if checkpoints:
        root = Path(checkpoints).expanduser()
        if not root.is_dir():
            raise InvalidInput("checkpoints", f"{root} is not a folder")
        if _is_diffusers_folder(root):
            return str(root), "local folder"
        for name in SVD_FOLDER_NAMES:
            if _is_diffusers_folder(root / name):
                return str(root / name), "local folder"
    return SVD_XT_REPO, "hub"


def resolve_sv3d(checkpoints: str | None, override: str | None = None) -> str:
    """Local path of ``sv3d_p.safetensors``: option ``sv3d`` (a file, or ``repo_id:filename``), else
    ``<checkpoints>/sv3d_p.safetensors``, else the Hugging Face cache (download unless offline)."""
    if override:
        p = Path(override).expanduser()
        if p.is_file():
            return str(p)
        if ":" in override and not p.exists():
            repo, filename = override.split(":", 1)
            return _hub_file(repo, filename)
        raise InvalidInput("sv3d", f"{override} is not a file (give a path to sv3d_p.safetensors or repo_id:filename)")
    if checkpoints:
        p = Path(checkpoints).expanduser() / SV3D_P_FILE
        if p.is_file():
            return str(p)
    return _hub_file(SV3D_REPO, SV3D_P_FILE, looked_in=checkpoints)


def _hub_file(repo: str, filename: str, looked_in: str | None = None) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=offline())
    except Exception as exc:
        raise InvalidInput("checkpoints", missing_message(f"{repo}/{filename}", looked_in, exc)) from exc


def missing_message(what: str, looked_in: str | None, exc: Exception) -> str:
    where = f"{Path(looked_in).expanduser()} and " if looked_in else ""
    hint = ("HF_HUB_OFFLINE is set, so nothing was downloaded" if offline()
            else f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    return (f"{what} not found: looked in {where}the Hugging Face cache; {hint}. Put the weights under "
            f"--checkpoints DIR (DIR/svd-xt/ in diffusers format, DIR/sv3d_p.safetensors) or into the cache "
            f"(huggingface-cli download {what.split('/')[0]}/{what.split('/')[1]}).")
