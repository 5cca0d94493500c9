from filters import Delayed, Occupancy


def test_equal_times_debounce_a_contact():
    d = Delayed(50, 50)
    assert d.update(True, 0) is False
    assert d.update(False, 10) is False  # a bounce
    assert d.update(True, 20) is False  # the new level starts again here
    assert d.update(True, 69) is False
    assert d.update(True, 70) is True
    assert d.update(False, 80) is True  # a bounce while closed
    assert d.update(True, 90) is True


def test_delayed_on_and_off():
    f = Delayed(on_ms=2000, off_ms=30000)
    assert f.update(True, 0) is False
    assert f.update(True, 1999) is False
    assert f.update(True, 2000) is True
    assert f.update(False, 3000) is True  # a frame without a target: still there
    assert f.update(True, 4000) is True
    assert f.update(False, 5000) is True
    assert f.update(False, 34999) is True
    assert f.update(False, 35000) is False


def test_ticks_wrap_around():
    from ticks import ticks_add

    start = ticks_add(0, -30)  # 30 ms before the tick counter wraps
    d = Delayed(50, 50)
    d.update(True, start)
    assert d.update(True, ticks_add(start, 49)) is False
    assert d.update(True, ticks_add(start, 50)) is True


def test_door_lock_wins_radar_covers_an_unlocked_door():
    o = Occupancy(radar_on_ms=1000, radar_off_ms=10000)
    assert o.update(True, "none", 0) == (True, "door")
    assert o.update(False, "still", 100) == (False, "fused")
    assert o.update(False, "still", 1100) == (True, "radar")
    assert o.update(False, "none", 2000) == (True, "radar")
    assert o.update(False, "none", 12000) == (False, "fused")
