"""One read per step: the sums buffer and the batched fetch."""

import math

import torch

from recorder.hooks.fetch import StepSums, fetch, norms


def test_step_sums_grow_and_keep_their_order():
    sums = StepSums(size=2)
    slots = [sums.add(torch.full((3,), float(i))) for i in range(5)]  # 3 past the end
    sums.add(torch.tensor([-1.0, 2.0], requires_grad=True), absolute=True)
    first = sums.add_all([torch.tensor(7.0), torch.tensor(8.0, dtype=torch.float64)])
    assert slots == [0, 1, 2, 3, 4] and first == 6
    assert sums.values() == [0.0, 3.0, 6.0, 9.0, 12.0, 3.0, 7.0, 8.0]
    sums.clear()
    assert sums.n == 0
    for i in range(8):  # the buffer was remade big enough: nothing kept aside now
        sums.add(torch.full((2,), float(i), dtype=torch.float16))
    assert not sums._spilled and sums.values() == [2.0 * i for i in range(8)]


def test_non_finite_sums_survive():
    sums = StepSums()
    sums.clear()
    sums.add(torch.tensor([1.0, float("nan")]))
    sums.add(torch.tensor([float("inf"), -float("inf")]))
    sums.add(torch.tensor([float("inf"), 1.0]))
    sums.clear()  # a fresh buffer
    sums.add(torch.tensor([1.0, float("nan")]))
    sums.add(torch.tensor([float("inf"), -float("inf")]))
    sums.add(torch.tensor([60000.0, 60000.0], dtype=torch.float16))  # no fp16 overflow
    values = sums.values()
    assert math.isnan(values[0]) and math.isnan(values[1]) and values[2] == 120000.0


def test_fetch_scalars_and_vectors_in_one_read():
    scalars = [torch.tensor(1.0), torch.tensor(2, dtype=torch.int64)]
    head, vectors = fetch(scalars, [torch.arange(3.0), torch.ones(2, 2)])
    assert head == [1.0, 2.0] and vectors == [[0.0, 1.0, 2.0], [1.0] * 4]
    assert fetch([]) == ([], [])


def test_norms_in_float32_for_half_precision():
    big = torch.full((4,), 60000.0, dtype=torch.float16)
    [n] = norms([big])
    assert n.dtype == torch.float32 and n.item() == 120000.0
