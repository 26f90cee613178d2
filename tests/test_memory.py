"""Memory-aware execution: the activation estimate's arithmetic, max_batch from a free-bytes figure,
precision choice."""

from __future__ import annotations

import pytest
import torch

from backend.errors import InvalidInput
from backend.models.memory import (
    WORKING_SET_FACTOR, UNetShape, auto_max_batch, max_batch, resolve_dtype, sequence_bytes,
)

GiB = 2**30
SVD_XT = UNetShape(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, heads0=5)


def test_sequence_bytes_counts_skips_and_working_set():
    shape = UNetShape(block_out_channels=(32, 64), layers_per_block=1, heads0=2)
    # 8x8 latent: conv_in 32*64, level 0: 1 block 32*64 + downsample 32*16, level 1: 1 block 64*16
    skips = 32 * 64 + 32 * 64 + 32 * 16 + 64 * 16
    working = WORKING_SET_FACTOR * 32 * 64
    assert sequence_bytes(shape, 3, (8, 8), 2) == 3 * 2 * (skips + working)
    assert sequence_bytes(shape, 3, (8, 8), 2, math_attention=True) == 3 * 2 * (skips + working + 2 * 64**2)
    # odd sizes round up when halving (as strided convolutions do)
    assert sequence_bytes(shape, 1, (9, 9), 4) == 4 * (32 * 81 * 2 + 32 * 25 + 64 * 25 + WORKING_SET_FACTOR * 32 * 81)


def test_svd_xt_at_576_is_about_two_gib_per_sequence_in_bf16():
    per_seq = sequence_bytes(SVD_XT, 25, (72, 72), 2)
    assert 1.5 * GiB < per_seq < 2.5 * GiB
    # an H100 with ~70 GiB free after weights runs the 21 rows x 2 (guidance) in two chunks
    n = max_batch(70 * GiB, per_seq, reserve_bytes=2 * GiB)
    assert 21 <= n < 42


def test_max_batch_arithmetic():
    assert max_batch(100, 10) == 8  # 80 % of 100 bytes in 10-byte sequences
    assert max_batch(100, 10, safety=1.0) == 10
    assert max_batch(100, 10, reserve_bytes=50, safety=1.0) == 5
    assert max_batch(100, 10, cap=3) == 3
    assert max_batch(5, 10) == 0
    assert max_batch(10, 10, reserve_bytes=20) == 0
    with pytest.raises(ValueError):
        max_batch(100, 0)
    with pytest.raises(ValueError):
        max_batch(100, 10, safety=1.5)


def test_auto_max_batch_from_a_given_free_figure():
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()  # the SVD-XT architecture, no memory
    shape = UNetShape.of(unet)
    assert shape == SVD_XT
    per_seq = sequence_bytes(shape, 25, (72, 72), 2, math_attention=False)
    n = auto_max_batch(unet, 25, (72, 72), "cuda", torch.bfloat16, free=60 * GiB, reserve_bytes=0)
    assert n == int(60 * GiB * 0.8 // per_seq)
    with pytest.raises(InvalidInput) as err:
        auto_max_batch(unet, 25, (72, 72), "cuda", torch.bfloat16, free=GiB, reserve_bytes=0, what="SVD-XT")
    assert err.value.field == "device" and "SVD-XT" in str(err.value) and "GiB" in str(err.value)


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cuda") == torch.float16
    assert resolve_dtype(torch.float64, "cpu") == torch.float64
    with pytest.raises(InvalidInput) as err:
        resolve_dtype("int8", "cpu")
    assert err.value.field == "dtype"
