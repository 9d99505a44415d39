"""The ordered thread-pool map that codes NDUs concurrently (nnc_core.workers)."""
import threading
import time

import pytest

from nnc_core.workers import ordered_map, resolve_threads


def _drawn_counter(n):
    drawn = []

    def items():
        for i in range(n):
            drawn.append(i)
            yield i
    return drawn, items()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_come_in_input_order(threads):
    assert list(ordered_map(lambda x: x * x, range(50), threads)) == [x * x for x in range(50)]


def test_default_window_is_four_items_per_thread():
    # small tensors behind a large one must not wait for it to be yielded: with two threads,
    # eight items are in flight before the first result is handed out
    release = threading.Event()
    drawn, items = _drawn_counter(40)

    def work(i):
        if i == 0:
            release.wait(5)
        return i
    results = ordered_map(work, items, 2)
    first = []
    consumer = threading.Thread(target=lambda: first.append(next(results)))
    consumer.start()
    deadline = time.monotonic() + 5
    while len(drawn) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)                        # room to draw a ninth item if the window allowed it
    assert len(drawn) == 8 and not first   # item 0 still running, eight drawn
    release.set()
    consumer.join(5)
    assert first == [0]
    assert list(results) == list(range(1, 40))


def test_explicit_window_limits_items_in_flight():
    drawn, items = _drawn_counter(10)
    results = ordered_map(lambda i: i, items, 2, window=1)
    assert next(results) == 0 and len(drawn) == 1


def test_weights_keep_large_items_to_a_share_per_thread():
    # equal large items: a third is drawn while two run, then the first must be handed out;
    # small ones behind a large item still fill the window
    release = threading.Event()
    drawn, items = _drawn_counter(10)

    def work(i):
        release.wait(5)
        return i
    sizes = [100, 100, 100, 100, 1, 1, 1, 1, 1, 1]
    results = ordered_map(work, items, 2, weight=lambda i: sizes[i])
    first = []
    consumer = threading.Thread(target=lambda: first.append(next(results)))
    consumer.start()
    time.sleep(0.2)
    assert len(drawn) == 3 and not first
    release.set()
    consumer.join(5)
    assert first == [0] and list(results) == list(range(1, 10))
    small = [1000] + [1] * 20
    drawn, items = _drawn_counter(len(small))
    release.clear()
    results = ordered_map(work, items, 2, weight=lambda i: small[i])
    consumer = threading.Thread(target=lambda: first.append(next(results)))
    consumer.start()
    time.sleep(0.2)
    assert len(drawn) == 8                 # the plain window of four per thread
    release.set()
    consumer.join(5)
    assert list(results) == list(range(1, len(small)))


def test_an_error_is_raised_at_its_result():
    def work(i):
        if i == 3:
            raise ValueError("item 3")
        return i
    results = ordered_map(work, range(10), 2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3"):
        next(results)


@pytest.mark.parametrize("bad", [0.5, "2", True, -1])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        resolve_threads(bad)
