"""AckTracker: the slot moves only past committed transactions whose events are all acked."""

from __future__ import annotations

import random

import pytest

from streamsync.capture.acks import AckTracker, Txn
from streamsync.errors import InvariantError


def test_flush_waits_for_every_ack_and_for_commit() -> None:
    t = AckTracker()
    a = t.begin(100)
    t.add(a)
    t.add(a)
    assert t.safe_lsn == 0
    t.ack(a)
    t.ack(a)
    assert t.safe_lsn == 0  # not committed yet
    t.commit(a, 120)
    assert t.safe_lsn == 120
    assert t.inflight == 0


def test_out_of_order_acks_never_skip_an_unacked_transaction() -> None:
    t = AckTracker()
    a, b, c = t.begin(100), None, None
    t.add(a)
    t.commit(a, 110)
    b = t.begin(200)
    t.add(b)
    t.commit(b, 210)
    c = t.begin(300)
    t.add(c)
    t.commit(c, 310)
    t.ack(c)  # the latest ack first: must not move the slot
    t.ack(b)
    assert t.safe_lsn == 0
    t.ack(a)
    assert t.safe_lsn == 310


def test_empty_transactions_flush_on_commit() -> None:
    t = AckTracker()
    hb = t.begin(50)
    t.commit(hb, 60)
    assert t.safe_lsn == 60


def test_idle_advances_only_with_nothing_open() -> None:
    t = AckTracker()
    a = t.begin(100)
    t.add(a)
    t.idle(500)
    assert t.safe_lsn == 0  # open transaction
    t.commit(a, 120)
    t.idle(500)
    assert t.safe_lsn == 0  # committed but unacked
    t.ack(a)
    t.idle(500)
    assert t.safe_lsn == 500
    t.idle(400)  # an older keepalive never moves it back
    assert t.safe_lsn == 500


def test_invariants() -> None:
    t = AckTracker(start_lsn=1000)
    a = t.begin(100)
    with pytest.raises(InvariantError):
        t.ack(a)  # more acks than events
    with pytest.raises(InvariantError):
        t.commit(a, 900)  # below the flushed position
    t.commit(a, 1100)
    with pytest.raises(InvariantError):
        t.commit(a, 1200)
    with pytest.raises(InvariantError):
        t.add(a)


def test_random_ack_orders_never_pass_an_unacked_event() -> None:
    rng = random.Random(7)
    for _ in range(200):
        t = AckTracker()
        pending: list[tuple[int, Txn]] = []  # (end_lsn, txn) per event
        txns = []
        for i in range(rng.randint(1, 8)):
            txn = t.begin(i * 100)
            for _ in range(rng.randint(0, 4)):
                t.add(txn)
                pending.append((i * 100 + 50, txn))
            t.commit(txn, i * 100 + 50)
            txns.append(txn)
        rng.shuffle(pending)
        acked: set[int] = set()
        for idx, (_end, txn) in enumerate(pending):
            t.ack(txn)
            acked.add(idx)
            safe = t.safe_lsn
            for j, (end, _) in enumerate(pending):
                if j not in acked:
                    assert safe < end, "flushed past an unacknowledged event"
        assert t.safe_lsn == txns[-1].end_lsn
        assert t.inflight == 0
