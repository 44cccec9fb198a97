"""Huge pages for weights and KV cache, checked against what the kernel says
about the mapping (/proc/self/smaps), not against our own bookkeeping."""
import mmap

import pytest
import torch

from vllm import _custom_ops as ops
from vllm import hugepages

THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_mode() -> str | None:
    try:
        with open(THP_MODE_FILE) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


needs_thp = pytest.mark.skipif(_thp_mode() not in ("always", "madvise"),
                               reason="transparent huge pages are off or absent here")


def _smaps_entry(address: int) -> dict[str, str]:
    """The smaps fields of the mapping that holds `address`."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    entry, inside = {}, False
    for line in lines:
        head = line.split()[0]
        if "-" in head and ":" not in head:  # a mapping's first line: start-end perms ...
            start, end = (int(part, 16) for part in head.split("-"))
            if inside:
                break
            inside = start <= address < end
        elif inside:
            key, _, value = line.partition(":")
            entry[key] = value.strip()
    return entry


def private_anonymous(nbytes: int) -> mmap.mmap:
    """Fresh private anonymous memory, as malloc maps it (mmap.mmap(-1, n)
    alone is shared memory, whose huge pages follow other settings)."""
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _vm_flags(address: int) -> list[str]:
    # smaps splits a mapping where madvise changed its flags; "hg" in VmFlags
    # marks a range advised MADV_HUGEPAGE, "nh" one advised MADV_NOHUGEPAGE
    return _smaps_entry(address).get("VmFlags", "").split()


def _advised_for_huge_pages(address: int) -> bool:
    return "hg" in _vm_flags(address)


@needs_thp
def test_empty_is_aligned_advised_and_usable():
    tensor = hugepages.empty(3 * hugepages.HUGE_PAGE // 2 + 7, torch.bfloat16)
    assert tensor.numel() == 3 * hugepages.HUGE_PAGE // 2 + 7 and tensor.dtype == torch.bfloat16
    assert tensor.data_ptr() % hugepages.HUGE_PAGE == 0
    assert _advised_for_huge_pages(tensor.data_ptr())
    values = torch.randn(tensor.numel()).to(torch.bfloat16)
    tensor.copy_(values)
    assert torch.equal(tensor, values)


@needs_thp
def test_touched_advised_memory_is_backed_by_huge_pages():
    # a fresh anonymous mapping, advised before its first touch (memory that
    # malloc recycles may already be mapped with small pages, which advice
    # does not change until khugepaged merges them)
    region = private_anonymous(9 * hugepages.HUGE_PAGE)
    tensor = torch.frombuffer(region, dtype=torch.uint8)
    assert hugepages.advise(tensor) >= 8 * hugepages.HUGE_PAGE
    tensor.fill_(1)
    # the kernel may fall back to small pages when memory is fragmented;
    # on a machine with free memory most of the range comes back huge
    huge_kb = int(_smaps_entry(tensor.data_ptr() + hugepages.HUGE_PAGE)["AnonHugePages"].split()[0])
    del tensor
    region.close()
    assert huge_kb >= 4 * hugepages.HUGE_PAGE // 1024


def test_small_or_disabled_allocations_are_plain(monkeypatch):
    small = hugepages.empty(100, torch.float32)
    assert small.numel() == 100 and hugepages.advise(small) == 0  # no aligned 2 MiB inside
    monkeypatch.setattr(hugepages, "enabled", False)
    big = hugepages.empty(hugepages.HUGE_PAGE, torch.uint8)
    assert big.numel() == hugepages.HUGE_PAGE and hugepages.advise(big) == 0


@needs_thp
def test_advise_covers_only_the_aligned_interior():
    # a fresh anonymous mapping: memory malloc recycles may carry an earlier
    # test's advice, which would blur the "not advised" check
    region = private_anonymous(5 * hugepages.HUGE_PAGE)
    raw = torch.frombuffer(region, dtype=torch.uint8)
    skip = -raw.data_ptr() % hugepages.HUGE_PAGE + 4096  # start just past a boundary
    view = raw[skip:skip + 3 * hugepages.HUGE_PAGE]
    assert hugepages.advise(view) == 2 * hugepages.HUGE_PAGE
    first = view.data_ptr() - 4096 + hugepages.HUGE_PAGE
    assert _advised_for_huge_pages(first)
    assert not _advised_for_huge_pages(view.data_ptr())
    del raw, view
    region.close()


@needs_thp
def test_call_order_weights_and_kv_cache_are_advised():
    from vllm.model_executor.layers.linear import (Linear, pack_weights_in_call_order,
                                                   place_weights_in_call_order)
    from vllm.worker.cpu_worker import _lazy_zeros

    layers = [Linear(1024, 1024, dtype=torch.bfloat16) for _ in range(3)]  # 6 MiB in all
    place_weights_in_call_order(layers)
    assert layers[0].weight.data_ptr() % hugepages.HUGE_PAGE == 0
    assert _advised_for_huge_pages(layers[1].weight.data_ptr())
    if ops.packed_linear_available():  # the copies packed_linear streams
        packed = pack_weights_in_call_order([layer.weight for layer in layers])
        assert packed[0].data_ptr() % hugepages.HUGE_PAGE == 0
        assert _advised_for_huge_pages(packed[1].data_ptr())


@needs_thp
@pytest.mark.parametrize("huge", [True, False], ids=["huge-pages", "small-pages"])
def test_kv_cache_page_size_is_the_engines_choice(monkeypatch, huge):
    from vllm.worker.cpu_worker import _lazy_zeros

    monkeypatch.setattr(hugepages, "kv_cache_on_huge_pages", lambda: huge)
    # 40 MiB: numpy advises huge pages for buffers this big by itself (the
    # cache's own advice must decide), and glibc maps anything above 32 MiB
    # afresh, as it does a real cache's layers (smaller buffers may be
    # recycled memory that earlier tests already backed with huge pages)
    big = _lazy_zeros((2560, 4, 32, 64), torch.bfloat16)
    assert torch.count_nonzero(big) == 0
    inner = (big.data_ptr() + hugepages.HUGE_PAGE - 1) & ~(hugepages.HUGE_PAGE - 1)
    flags = _vm_flags(inner)
    assert ("hg" in flags) == huge and ("nh" in flags) == (not huge)
    if not huge:
        big.fill_(1)
        assert int(_smaps_entry(inner)["AnonHugePages"].split()[0]) == 0


def _fake_balloon(root, features: str | None):
    device = root / "virtio3"
    device.mkdir(parents=True)
    if features is not None:
        (device / "features").write_text(features + "\n")


@pytest.mark.parametrize("features, reclaims", [
    ("0110010100000000", True),     # this project's Firecracker VMs: bit 5 set
    ("0110000100000000", False),    # a balloon without free page reporting
    ("0110", False),                # fewer bits than the reporting one
    (None, False),                  # unreadable features
], ids=["reporting", "no-reporting", "short", "unreadable"])
def test_free_page_reporting_is_read_from_the_balloon_device(monkeypatch, tmp_path, features,
                                                              reclaims):
    _fake_balloon(tmp_path, features)
    monkeypatch.setattr(hugepages, "_BALLOON_DEVICES", str(tmp_path))
    hugepages.host_reclaims_free_memory.cache_clear()
    try:
        assert hugepages.host_reclaims_free_memory() is reclaims
        assert hugepages.kv_cache_on_huge_pages() is (not reclaims)
    finally:
        hugepages.host_reclaims_free_memory.cache_clear()


def test_no_balloon_driver_means_huge_pages_for_the_kv_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(hugepages, "_BALLOON_DEVICES", str(tmp_path / "absent"))
    hugepages.host_reclaims_free_memory.cache_clear()
    try:
        assert hugepages.kv_cache_on_huge_pages() is True
    finally:
        hugepages.host_reclaims_free_memory.cache_clear()


def test_without_madvise_tensors_are_plain(monkeypatch):
    # a platform without madvise: plain tensors, nothing advised
    monkeypatch.setattr(hugepages, "_madvise", None)
    tensor = hugepages.empty(2 * hugepages.HUGE_PAGE, torch.uint8)
    assert tensor.numel() == 2 * hugepages.HUGE_PAGE and hugepages.advise(tensor) == 0
