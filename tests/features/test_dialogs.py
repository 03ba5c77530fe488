from __future__ import annotations

from router.features.dialogs import DialogTracker


def test_dialogs_confirmed_ended_and_counted_once() -> None:
    t = DialogTracker()
    assert t.confirmed("c1", "sip:pbx1", 10.0)
    assert not t.confirmed("c1", "sip:pbx1", 10.5)  # a 2xx retransmission or second fork
    assert t.confirmed("c2", "sip:pbx2", 11.0)
    assert len(t) == 2
    assert t.per_destination() == {"sip:pbx1": 1, "sip:pbx2": 1}
    ended = t.ended("c1")
    assert ended is not None
    assert ended.destination == "sip:pbx1"
    assert t.ended("c1") is None
    assert len(t) == 1
    assert (t.confirmed_total, t.ended_total) == (2, 1)


def test_dialogs_without_bye_expire_after_max_lifetime() -> None:
    t = DialogTracker(max_lifetime=100.0)
    t.confirmed("old", "d", 0.0)
    t.confirmed("new", "d", 50.0)
    assert [d.call_id for d in t.prune(99.0)] == []
    assert [d.call_id for d in t.prune(100.0)] == ["old"]
    assert "new" in t
    assert "old" not in t
    assert t.expired_total == 1
