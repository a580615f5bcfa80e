"""Tests for ``actors.mm.readahead``: readahead decisions of mm/readahead.c and mm/filemap.c at v4.19."""

from __future__ import annotations

import pytest

from actors.mm.readahead import (
    MMAP_LOTSAMISS,
    MMAP_MISS_MAX,
    VM_MAX_READAHEAD_PAGES,
    FileRaState,
    Madvise,
    RaOutcome,
    RaWindow,
    count_history_pages,
    decrement_mmap_miss,
    do_async_mmap_readahead_decision,
    do_sync_mmap_readahead_decision,
    get_init_ra_size,
    get_next_ra_size,
    mmap_read_around,
    ondemand_readahead,
    page_cache_async_readahead_decision,
    page_cache_sync_readahead_decision,
)

NR_PAGES = 1024


def _sync(ra: FileRaState, offset: int, **kw: object):
    args = {"madvise": Madvise.NORMAL, "blkcg_congested": False, **kw}
    return do_sync_mmap_readahead_decision(ra, offset, **args)  # type: ignore[arg-type]


def _async(ra: FileRaState, offset: int, **kw: object):
    args = dict(
        madvise=Madvise.NORMAL,
        page_readahead=True,
        page_writeback=False,
        inode_congested=False,
        blkcg_congested=False,
    )
    args.update(kw)
    return do_async_mmap_readahead_decision(ra, offset, **args)  # type: ignore[arg-type]


# -- constants and state ----------------------------------------------------------------


def test_constants_match_v4_19():
    """VM_MAX_READAHEAD (128 KB) is 32 pages, MMAP_LOTSAMISS is 100 and mmap_miss saturates at 1000."""
    assert VM_MAX_READAHEAD_PAGES == 32
    assert MMAP_LOTSAMISS == 100
    assert MMAP_MISS_MAX == 1000


def test_file_ra_state_init_defaults():
    """A fresh file_ra_state has the default ra_pages, no window and prev_pos -1 (file_ra_state_init)."""
    ra = FileRaState()
    assert (ra.start, ra.size, ra.async_size, ra.ra_pages, ra.mmap_miss, ra.prev_pos) == (0, 0, 0, 32, 0, -1)


def test_ra_window_indices_and_mark_clip_at_eof():
    """__do_page_cache_readahead stops at EOF, and a mark past EOF is never set."""
    window = RaWindow(84, 32, 8)
    assert window.readahead_index == 108
    assert window.indices(NR_PAGES) == range(84, 116)
    assert window.marked_index(NR_PAGES) == 108
    assert window.indices(100) == range(84, 100)
    assert window.marked_index(100) is None
    assert window.indices(0) == range(84, 84)


def test_ra_window_without_async_part_has_no_mark():
    """With async_size 0 the mark index lies just past the window, so no page gets PG_readahead."""
    window = RaWindow(10, 4, 0)
    assert window.readahead_index == 14
    assert window.marked_index(NR_PAGES) is None


# -- read-around (do_sync_mmap_readahead without hints) -----------------------------------


def test_read_around_centres_32_pages_on_fault():
    """Behaviour 16: a cold fault at 100 reads [84, 115] and marks 108 PG_readahead."""
    ra = FileRaState()
    window = mmap_read_around(ra, 100)
    assert window == RaWindow(84, 32, 8)
    assert list(window.indices(NR_PAGES)) == list(range(84, 116))
    assert window.marked_index(NR_PAGES) == 108
    assert (ra.start, ra.size, ra.async_size, ra.mmap_miss) == (84, 32, 8, 1)


def test_read_around_clipped_at_file_start_and_eof():
    """Read-around starts at 0 near the file start and reads nothing past EOF."""
    ra = FileRaState()
    head = mmap_read_around(ra, 5)
    assert head == RaWindow(0, 32, 8)
    assert head.marked_index(NR_PAGES) == 24
    tail = mmap_read_around(ra, 118)
    assert tail == RaWindow(102, 32, 8)
    assert tail.indices(120) == range(102, 120)
    assert tail.marked_index(120) is None  # 126 is past EOF
    decision = _sync(FileRaState(), 118)
    assert decision.outcome is RaOutcome.SUBMIT and decision.window == RaWindow(102, 32, 8)


def test_read_around_disabled_when_ra_pages_zero():
    """With ra_pages == 0 there is no read-around and the miss is not counted."""
    ra = FileRaState(ra_pages=0)
    assert mmap_read_around(ra, 100) is None
    assert ra.mmap_miss == 0


def test_mmap_miss_over_lotsamiss_disables_read_around():
    """The 101st net miss turns read-around off (single-page reads) until hits pay misses back."""
    ra = FileRaState()
    for i in range(MMAP_LOTSAMISS):
        assert mmap_read_around(ra, 1000 * i + 500) is not None
    assert ra.mmap_miss == MMAP_LOTSAMISS
    decision = _sync(ra, 7)
    assert decision.outcome is RaOutcome.LOTSAMISS
    assert decision.window is None and not decision.calls_readahead
    assert ra.mmap_miss == MMAP_LOTSAMISS + 1
    decrement_mmap_miss(ra)  # one hit (fault-around or async path) ...
    assert mmap_read_around(ra, 7) is None  # ... is eaten by the next miss (101 again)
    decrement_mmap_miss(ra)
    decrement_mmap_miss(ra)  # two hits: 99, and the next miss makes it 100
    assert mmap_read_around(ra, 7) == RaWindow(0, 32, 8)
    assert ra.mmap_miss == MMAP_LOTSAMISS


def test_mmap_miss_saturates_at_1000():
    """mmap_miss counts up only while below MMAP_LOTSAMISS * 10."""
    ra = FileRaState(mmap_miss=MMAP_MISS_MAX)
    assert mmap_read_around(ra, 50) is None
    assert ra.mmap_miss == MMAP_MISS_MAX
    ra.mmap_miss = 0
    decrement_mmap_miss(ra)
    assert ra.mmap_miss == 0


def test_read_around_ignores_blkcg_congestion_in_4_19():
    """v4.19 read-around goes straight to ra_submit, so blk_cgroup_congested() does not stop it."""
    ra = FileRaState()
    decision = _sync(ra, 100, blkcg_congested=True)
    assert decision.outcome is RaOutcome.SUBMIT
    assert decision.window == RaWindow(84, 32, 8)
    assert decision.calls_readahead


# -- madvise hints -------------------------------------------------------------------------


def test_madv_random_reads_no_readahead():
    """VM_RAND_READ: no readahead on a miss and no mmap_miss accounting on either path."""
    ra = FileRaState(mmap_miss=5)
    decision = _sync(ra, 100, madvise=Madvise.RANDOM)
    assert decision.outcome is RaOutcome.RAND_READ
    assert not decision.calls_readahead and decision.window is None
    assert _async(ra, 100, madvise=Madvise.RANDOM).outcome is RaOutcome.RAND_READ
    assert ra.mmap_miss == 5
    assert (ra.start, ra.size) == (0, 0)


def test_madvise_from_vm_flags_prefers_random():
    """VM_RAND_READ is tested before VM_SEQ_READ, as in do_sync_mmap_readahead."""
    assert Madvise.from_hints(rand_read=True, seq_read=True) is Madvise.RANDOM
    assert Madvise.from_hints(rand_read=False, seq_read=True) is Madvise.SEQUENTIAL
    assert Madvise.from_hints(rand_read=False, seq_read=False) is Madvise.NORMAL


def test_madv_sequential_uses_ondemand_window():
    """VM_SEQ_READ runs ondemand with req_size = ra_pages: a fault at 0 reads 32 pages marked at 16."""
    ra = FileRaState()
    decision = _sync(ra, 0, madvise=Madvise.SEQUENTIAL)
    assert decision.outcome is RaOutcome.SUBMIT and decision.calls_readahead
    window = decision.window
    assert window == RaWindow(0, 32, 16)
    assert window.marked_index(NR_PAGES) == 16
    assert ra.mmap_miss == 0  # the sequential path does not count misses
    # The marker fault at 16 pushes the window forward by a full 32 pages.
    decision = _async(ra, 16, madvise=Madvise.SEQUENTIAL)
    assert decision.window == RaWindow(32, 32, 32)
    assert decision.window.marked_index(NR_PAGES) == 32


def test_madv_sequential_random_offset_reads_req_size_only():
    """Without history or prev_pos a VM_SEQ_READ miss mid-file reads ra_pages pages, unmarked, leaving ra alone."""
    ra = FileRaState()
    assert _sync(ra, 500, madvise=Madvise.SEQUENTIAL).window == RaWindow(500, 32, 0)
    assert (ra.start, ra.size, ra.async_size) == (0, 0, 0)


def test_madv_sequential_skipped_when_blkcg_congested():
    """page_cache_sync_readahead returns when blk_cgroup_congested(), after 5.1 would already have dropped the sem."""
    ra = FileRaState()
    decision = _sync(ra, 0, madvise=Madvise.SEQUENTIAL, blkcg_congested=True)
    assert decision.outcome is RaOutcome.BLKCG_CONGESTED
    assert decision.window is None
    assert decision.calls_readahead
    assert (ra.start, ra.size, ra.async_size) == (0, 0, 0)


# -- async readahead -------------------------------------------------------------------------


def test_async_readahead_keeps_marker_when_ra_pages_zero():
    """Behaviour 11 / v4.19: ra_pages == 0 returns before ClearPageReadahead, yet the fault path got that far."""
    ra = FileRaState(ra_pages=0, mmap_miss=3)
    decision = _async(ra, 108)
    assert decision.outcome is RaOutcome.NO_RA_PAGES
    assert not decision.clears_pg_readahead
    assert decision.calls_readahead  # V3 / 5.1-5.6 drop mmap_sem here: the livelock
    assert decision.window is None
    assert ra.mmap_miss == 2
    # The same page faults again: same answer, forever.
    assert _async(ra, 108) == decision


def test_zero_readahead_fix_returns_before_dropping():
    """5c72feee3e45 (v5.7): ra_pages == 0 returns before the sem drop and before paying back mmap_miss."""
    ra = FileRaState(ra_pages=0, mmap_miss=3)
    decision = _async(ra, 108, zero_readahead_fix=True)
    assert decision.outcome is RaOutcome.NO_RA_PAGES
    assert not decision.calls_readahead and not decision.clears_pg_readahead
    assert ra.mmap_miss == 3


def test_async_readahead_keeps_marker_under_writeback():
    """PG_readahead aliases PG_reclaim: a page under writeback keeps the flag and reads nothing."""
    ra = FileRaState()
    mmap_read_around(ra, 100)
    decision = _async(ra, 108, page_writeback=True)
    assert decision.outcome is RaOutcome.WRITEBACK
    assert not decision.clears_pg_readahead and decision.window is None


def test_async_readahead_skipped_when_congested():
    """An inode or blkcg (use_delay) congestion clears PG_readahead but submits nothing."""
    for kw, outcome in (
        ({"inode_congested": True}, RaOutcome.INODE_CONGESTED),
        ({"blkcg_congested": True}, RaOutcome.BLKCG_CONGESTED),
    ):
        ra = FileRaState()
        mmap_read_around(ra, 100)
        decision = _async(ra, 108, **kw)
        assert decision.outcome is outcome
        assert decision.clears_pg_readahead
        assert decision.window is None
        assert (ra.start, ra.size, ra.async_size) == (84, 32, 8)


def test_async_readahead_after_read_around_reads_next_window():
    """Behaviour 16: the fault on the mark (off+8) reads the 32 pages after the read-around window."""
    ra = FileRaState()
    mmap_read_around(ra, 100)
    decision = _async(ra, 108)
    assert decision.outcome is RaOutcome.SUBMIT
    assert decision.clears_pg_readahead and decision.calls_readahead
    assert decision.window == RaWindow(116, 32, 32)
    assert decision.window.marked_index(NR_PAGES) == 116
    assert ra.mmap_miss == 0


def test_async_without_marker_only_pays_back_a_miss():
    """A cached page without PG_readahead decrements mmap_miss and reads nothing."""
    ra = FileRaState(mmap_miss=4)
    decision = _async(ra, 9, page_readahead=False)
    assert decision.outcome is RaOutcome.NO_MARKER
    assert not decision.calls_readahead
    assert ra.mmap_miss == 3


def test_page_cache_entry_points_return_early_when_ra_pages_zero():
    """Both mm/readahead.c entry points return at once for ra_pages == 0."""
    ra = FileRaState(ra_pages=0)
    sync = page_cache_sync_readahead_decision(ra, 0, 4, blkcg_congested=False)
    assert sync.outcome is RaOutcome.NO_RA_PAGES
    async_ = page_cache_async_readahead_decision(
        ra, 0, 4, page_writeback=False, inode_congested=False, blkcg_congested=False
    )
    assert async_.outcome is RaOutcome.NO_RA_PAGES and not async_.clears_pg_readahead


# -- ondemand window sizing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 4), (2, 4), (3, 8), (4, 8), (8, 16), (9, 32), (32, 32), (64, 32)],
)
def test_get_init_ra_size_for_32_page_max(size: int, expected: int):
    """get_init_ra_size: round up to a power of two, x4 up to max/32, x2 up to max/4, else max."""
    assert get_init_ra_size(size, 32) == expected


def test_get_next_ra_size_grows_4x_then_2x_up_to_max():
    """get_next_ra_size: x4 below max/16, x2 from there, capped at max."""
    ra = FileRaState(ra_pages=256)
    sizes = []
    ra.size = 4
    for _ in range(6):
        ra.size = get_next_ra_size(ra, 256)
        sizes.append(ra.size)
    assert sizes == [16, 32, 64, 128, 256, 256]
    ra.size = 1
    assert get_next_ra_size(ra, 32) == 4  # 1 < 32/16
    ra.size = 2
    assert get_next_ra_size(ra, 32) == 4  # 2 is not below 32/16: x2


def test_ondemand_sequential_stream_ramps_window_to_max():
    """A 1-page read(2) stream from page 0 starts at 4 pages and doubles each marker hit up to ra_pages."""
    ra = FileRaState(ra_pages=64)
    window = ondemand_readahead(ra, 0, 1, hit_readahead_marker=False)
    # get_init_ra_size(1, 64) = 4 (x4), async 3: the mark is page 1.
    assert window == RaWindow(0, 4, 3)
    seen = [window]
    for _ in range(5):
        window = ondemand_readahead(ra, window.readahead_index, 1, hit_readahead_marker=True)
        seen.append(window)
    assert [w.size for w in seen] == [4, 8, 16, 32, 64, 64]
    assert [w.start for w in seen] == [0, 4, 12, 28, 60, 124]
    assert all(w.async_size == w.size for w in seen[1:])


def test_ondemand_sequential_miss_at_window_end_continues_stream():
    """Arriving at start + size (the mark was skipped) still counts as sequential."""
    ra = FileRaState(start=100, size=8, async_size=8)
    # 8 -> 16 (x2, 8 is not below 32/16); offset == new start with size == async_size,
    # so the next window is merged in: 16 + 32 > 32 gives (32, async 16).
    assert ondemand_readahead(ra, 108, 1, hit_readahead_marker=False) == RaWindow(108, 32, 16)


def test_ondemand_prev_pos_detects_sequential_miss():
    """A miss right after the previous read's page (prev_pos) starts a fresh initial window there."""
    ra = FileRaState(prev_pos=499 * 4096 + 10, start=0, size=4, async_size=3)
    window = ondemand_readahead(ra, 500, 4, hit_readahead_marker=False)
    # get_init_ra_size(4, 32) = 8 (x2), async 8 - 4 = 4; not a self-hit, so no merge.
    assert window == RaWindow(500, 8, 4)


def test_ondemand_oversize_request_uses_io_pages():
    """A request bigger than ra_pages may grow the window up to bdi->io_pages."""
    ra = FileRaState()
    # max_pages = min(64, 48) = 48 < 64: oversize read, initial window of 48 that
    # would hit its own mark, so it is split into 48 with async 24.
    assert ondemand_readahead(ra, 500, 64, hit_readahead_marker=False, io_pages=48) == RaWindow(500, 48, 24)
    # With io_pages >= req_size the request fits max_pages: a plain random read.
    ra = FileRaState()
    assert ondemand_readahead(ra, 500, 64, hit_readahead_marker=False, io_pages=128) == RaWindow(500, 64, 0)


def test_ondemand_marker_without_state_uses_cached_run():
    """Interleaved streams: a marker hit with stale state ramps from the cached run after the page."""
    ra = FileRaState(start=0, size=4, async_size=2)
    cached = set(range(200, 208))  # 200..207 cached; the hole is at 208
    window = ondemand_readahead(ra, 200, 1, hit_readahead_marker=True, cached=cached)
    # old async part = 208 - 200 = 8, + req 1 = 9, x2 (9 >= 32/16) = 18
    assert window == RaWindow(208, 18, 18)
    fully_cached = set(range(300, 400))
    assert ondemand_readahead(FileRaState(), 300, 1, hit_readahead_marker=True, cached=fully_cached) is None


def test_ondemand_context_readahead_from_history():
    """A miss after more than req_size contiguously cached pages reads ahead as a stream (async 1)."""
    cached = set(range(90, 100))
    assert count_history_pages(cached, 100, 32) == 10
    ra = FileRaState()
    window = ondemand_readahead(ra, 100, 4, hit_readahead_marker=False, cached=cached)
    assert window == RaWindow(100, 14, 1)
    assert count_history_pages(set(range(0, 10)), 10, 32) == 10
    ra = FileRaState()
    # History reaches the file start: doubled.
    assert ondemand_readahead(ra, 10, 2, hit_readahead_marker=False, cached=set(range(10))) == RaWindow(10, 22, 1)


def test_ondemand_small_random_read_leaves_state_alone():
    """A standalone small random read reads exactly req_size pages and keeps the old window."""
    ra = FileRaState(start=40, size=16, async_size=16)
    assert ondemand_readahead(ra, 700, 2, hit_readahead_marker=False) == RaWindow(700, 2, 0)
    assert (ra.start, ra.size, ra.async_size) == (40, 16, 16)
