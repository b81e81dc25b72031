"""The ledger's share of the org budget: credits other processes reported count against it."""

from __future__ import annotations

import pytest

from streamsync.errors import CreditBudgetExhausted
from streamsync.zoho.credits import CreditLedger


def test_others_count_against_the_budget() -> None:
    now = [1000.0]
    ledger = CreditLedger(1000, clock=lambda: now[0])
    ledger.charge(300)
    ledger.others_used = 600
    assert ledger.used_24h() == 300
    assert ledger.total_used_24h() == 900
    assert ledger.remaining() == 100
    ledger.check(100)
    with pytest.raises(CreditBudgetExhausted) as info:
        ledger.check(101)
    assert info.value.details["used_24h"] == 900
    ledger.check(101, urgent=True)  # urgent work is never refused


def test_unjournaled_charges_are_taken_once_and_can_be_put_back() -> None:
    ledger = CreditLedger(10_000, clock=lambda: 5.0)
    ledger.charge(3)  # nobody journals yet: nothing is kept (no growth in plain clients)
    assert ledger.take_unjournaled() == []
    ledger.journaled = True
    ledger.charge(10)
    ledger.charge(500)
    taken = ledger.take_unjournaled()
    assert taken == [(5.0, 10), (5.0, 500)]
    assert ledger.take_unjournaled() == []
    ledger.charge(1)
    ledger.return_unjournaled(taken)  # the journal write failed
    assert ledger.take_unjournaled() == [(5.0, 10), (5.0, 500), (5.0, 1)]
