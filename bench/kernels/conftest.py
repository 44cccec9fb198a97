"""Shared benchmark fixtures: run each case with 1 and 2 OpenMP threads."""
import pytest
import torch


@pytest.fixture(params=[1, 2], ids=lambda t: f"{t}t")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
