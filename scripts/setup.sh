#!/usr/bin/env bash
# One-command setup: creates .venv/ in the repo root with everything dsquare needs.
# Where no CUDA GPU is present it pins the local CPU build of torch 2.13.0 first, so pip
# never pulls the CUDA stack; torchvision is never installed (it breaks diffusers on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing torch with CUDA and the gpu extra (gsplat, lpips)"
    "${PIP[@]}" torch
    "${PIP[@]}" -e ".[blender,test,gpu]"
else
    echo "[setup] no CUDA GPU: installing the CPU build torch==2.13.0 (lpips/gsplat left out)"
    "${PIP[@]}" torch==2.13.0
    "${PIP[@]}" -e ".[blender,test]"
fi
if .venv/bin/python -m pip show torchvision >/dev/null 2>&1 && ! .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "[setup] removing torchvision: it has no CPU build and breaks 'import diffusers'" >&2
    .venv/bin/python -m pip uninstall -y -q torchvision
fi
.venv/bin/python -c "import torch, diffusers, zmq, msgpack, bpy; print('[setup] ok: torch', torch.__version__, '| diffusers', diffusers.__version__, '| blender', bpy.app.version_string)"
