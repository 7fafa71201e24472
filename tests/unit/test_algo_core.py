"""Masked statistics, log-probs and entropy against values worked out by hand."""

import math
import subprocess
import sys
from pathlib import Path

import torch
from torch.testing import assert_close

from mplus.algo import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Masked entries: 1, 2, 3 (row 0) and 5 (row 1). Padding holds junk, including inf.
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, -50.0, math.inf, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
# mean = 11/4 = 2.75; deviations -1.75, -0.75, 0.25, 2.25; squares sum to
# 3.0625 + 0.5625 + 0.0625 + 5.0625 = 8.75; unbiased var = 8.75/3 = 35/12, biased = 8.75/4.
MEAN = 2.75
VAR_UNBIASED = 35 / 12


def test_masked_sum_and_mean_ignore_padding():
    assert_close(masked_sum(X, MASK), torch.tensor(11.0))
    assert_close(masked_mean(X, MASK), torch.tensor(MEAN))
    # Per row: (1+2+3)/3 = 2, 5/1 = 5.
    assert_close(masked_sum(X, MASK, dim=1), torch.tensor([6.0, 5.0]))
    assert_close(masked_mean(X, MASK, dim=1), torch.tensor([2.0, 5.0]))
    # Bool masks behave like 0/1 float masks.
    assert_close(masked_mean(X, MASK.bool()), torch.tensor(MEAN))


def test_masked_mean_of_empty_mask_is_zero_not_nan():
    assert_close(masked_mean(X, torch.zeros_like(MASK)), torch.tensor(0.0))
    assert_close(
        masked_mean(X, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]), dim=1), torch.tensor([1.0, 0.0])
    )


def test_masked_var():
    assert_close(masked_var(X, MASK), torch.tensor(VAR_UNBIASED))
    assert_close(masked_var(X, MASK, unbiased=False), torch.tensor(8.75 / 4))
    # A single entry: no Bessel division by zero, variance 0.
    assert_close(masked_var(X, torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]])), torch.tensor(0.0))


def test_masked_whiten_values_and_moments():
    out = masked_whiten(X, MASK)
    std = math.sqrt(VAR_UNBIASED)
    expected = torch.tensor(
        [[-1.75 / std, -0.75 / std, 0.25 / std, 0.0], [2.25 / std, 0.0, 0.0, 0.0]]
    )
    assert_close(out, expected)
    assert torch.isfinite(out).all()
    assert_close(masked_mean(out, MASK), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert_close(masked_var(out, MASK), torch.tensor(1.0))


def test_masked_whiten_without_mean_shift_keeps_the_mean():
    out = masked_whiten(X, MASK, shift_mean=False)
    std = math.sqrt(VAR_UNBIASED)
    assert_close(out[0, 0], torch.tensor(-1.75 / std + MEAN))
    assert_close(masked_mean(out, MASK), torch.tensor(MEAN))
    assert out[0, 3] == 0 and out[1, 1] == 0


def test_logprobs_from_logits():
    # logits (0, ln 3): softmax = (1/4, 3/4).
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (1, 2, 2)
    labels = torch.tensor([[1, 0]])
    assert_close(
        logprobs_from_logits(logits, labels), torch.tensor([[math.log(0.75), math.log(0.25)]])
    )


def test_logprobs_from_logits_upcasts_and_tolerates_ignore_index():
    logits = torch.tensor([[[0.0, math.log(3.0)], [1.0, 1.0]]]).to(torch.bfloat16)
    out = logprobs_from_logits(logits, torch.tensor([[1, -100]]))
    assert out.dtype == torch.float32
    # Position 1 has uniform logits: any token has log-prob ln(1/2). bf16 ln 3 is ~3e-3 off.
    assert_close(out, torch.tensor([[math.log(0.75), math.log(0.5)]]), atol=5e-3, rtol=0)


def test_entropy_from_logits():
    # (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4) = ln 4 - (3/4) ln 3. Uniform over 4: ln 4.
    # -1e4 puts exp() below float32 range: those two tokens have probability exactly 0.
    logits = torch.tensor([[[0.0, math.log(3.0), -1e4, -1e4], [0.0, 0.0, 0.0, 0.0]]])
    expected = torch.tensor([[math.log(4.0) - 0.75 * math.log(3.0), math.log(4.0)]])
    assert_close(entropy_from_logits(logits), expected)
    assert entropy_from_logits(logits.to(torch.bfloat16)).dtype == torch.float32


def test_import_pulls_in_no_lightning_or_transformers():
    code = (
        "import sys, mplus.algo\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in {'lightning', 'pytorch_lightning', 'transformers'})\n"
        "assert not heavy, heavy\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
