"""One read per step: fused norms and the batched fetch."""

import math

import torch

from recorder.hooks.fetch import fetch, norms


def test_norms_keep_nan_and_inf_and_read_in_one_go():
    tensors = [torch.tensor([1.0, float("nan")]), torch.tensor([float("inf"), -float("inf")]),
               torch.tensor([3.0, 4.0], requires_grad=True)]
    values, _ = fetch(norms(tensors))
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == 5.0


def test_fetch_scalars_and_vectors_in_one_read():
    scalars = [torch.tensor(1.0), torch.tensor(2, dtype=torch.int64)]
    head, vectors = fetch(scalars, [torch.arange(3.0), torch.ones(2, 2)])
    assert head == [1.0, 2.0] and vectors == [[0.0, 1.0, 2.0], [1.0] * 4]
    assert fetch([]) == ([], [])


def test_norms_in_float32_for_half_precision():
    big = torch.full((4,), 60000.0, dtype=torch.float16)
    [n] = norms([big])
    assert n.dtype == torch.float32 and n.item() == 120000.0


def test_norms_of_mixed_precisions_in_one_call():
    """A model may hold float64 and float16 tensors at once: each keeps its own width."""
    tensors = [torch.full((4,), 60000.0, dtype=torch.float16), torch.ones(4, dtype=torch.float64),
               torch.ones(4, dtype=torch.bfloat16), torch.empty(0)]
    values, _ = fetch(norms(tensors))
    assert values == [120000.0, 2.0, 2.0, 0.0]
