from ld2410 import (
    DETECT_CM,
    HEADER,
    MOVE_CM,
    MOVE_ENERGY,
    STATE,
    STILL_CM,
    STILL_ENERGY,
    Parser,
    Radar,
    encode,
)


def test_one_frame():
    frame = encode("still", still_cm=120, still_energy=60, detect_cm=130)
    assert len(frame) == 23
    [r] = Parser().feed(frame)
    assert r[STATE] == "still" and r[STILL_CM] == 120 and r[STILL_ENERGY] == 60
    assert r[DETECT_CM] == 130


def test_hand_written_frame():
    # A moving target at 0x0123 cm, energy 0x40; bytes written out by hand.
    frame = bytes(
        [
            0xF4,
            0xF3,
            0xF2,
            0xF1,
            0x0D,
            0x00,
            0x02,
            0xAA,
            0x01,
            0x23,
            0x01,
            0x40,
            0x00,
            0x00,
            0x00,
            0x23,
            0x01,
            0x55,
            0x00,
            0xF8,
            0xF7,
            0xF6,
            0xF5,
        ]
    )
    [r] = Parser().feed(frame)
    assert r[STATE] == "moving" and r[MOVE_CM] == 0x123 and r[MOVE_ENERGY] == 0x40


def test_engineering_mode_frame_is_read():
    # Engineering mode (type 0x01, 35 bytes): the target, the two max gates,
    # 9 moving and 9 still gate energies, 2 more bytes, 55 00. The example
    # frame of Hi-Link's serial protocol document.
    frame = bytes.fromhex(
        "f4f3f2f1 2300 01aa 03 1e00 3c 0000 39 0000 0808"
        " 3c2205030304030605 0000391013060608 04 0305 5500 f8f7f6f5".replace(" ", "")
    )
    [r] = Parser().feed(frame)
    assert r[STATE] == "both" and r[MOVE_CM] == 30 and r[MOVE_ENERGY] == 60


def test_garbage_and_split_frames():
    stream = (
        b"\x00\xff junk"
        + encode("moving", move_cm=80)
        + b"\xf4\xf3 noise"
        + encode("none")
        + HEADER[:2]
    )
    p = Parser()
    got = []
    # Fed in pieces of every size 1..7, as a UART hands them over.
    i = 0
    size = 1
    while i < len(stream):
        got += p.feed(stream[i : i + size])
        i += size
        size = size % 7 + 1
    assert [r[STATE] for r in got] == ["moving", "none"]
    assert p.dropped > 0
    got = p.feed(HEADER[2:] + encode("both")[4:])  # the split header completes a frame
    assert [r[STATE] for r in got] == ["both"]


def test_corrupt_frames_are_skipped():
    good = encode("still", still_cm=50)
    bad_footer = good[:-1] + b"\x00"
    bad_head = good[:7] + b"\xab" + good[8:]
    bad_length = good[:4] + b"\xff\x00" + good[6:]
    bad_state = good[:8] + b"\x07" + good[9:]
    p = Parser()
    got = p.feed(bad_footer + bad_head + bad_length + bad_state + good)
    assert [r[STATE] for r in got] == ["still"] and p.frames == 1


def test_random_noise_never_crashes():
    p = Parser()
    seed = 1
    for _ in range(2000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        p.feed(bytes([seed & 0xFF, (seed >> 8) & 0xFF, 0xF4, (seed >> 16) & 0xFF]))
    assert p.feed(encode("none"))[-1][STATE] == "none"
    assert len(p._buf) < 100  # noise is never hoarded


def test_still_seconds_stale_radar_and_stuck_target():
    r = Radar(timeout_ms=5000, stuck_ms=60000)
    r.feed(encode("still", still_cm=100, still_energy=50), 0)
    assert r.status(0) == ("still", 0, False, False)
    for t in range(100, 30001, 100):
        r.feed(encode("still", still_cm=100, still_energy=50), t)
    assert r.status(30000) == ("still", 30, False, False)
    r.feed(encode("moving", move_cm=80, move_energy=70), 30100)  # she moved
    assert r.status(30100)[:2] == ("moving", 0)
    for t in range(30200, 100001, 100):
        r.feed(encode("still", still_cm=100, still_energy=50), t)
    state, still_s, stale, stuck = r.status(100000)
    assert not stale
    assert state == "still" and still_s == 69 and stuck  # a ghost: the fusion ignores it
    assert r.status(106000)[0] == "none" and r.status(106000)[2]  # no frames for 6 s: stale


def test_a_week_long_still_target_across_the_tick_wrap():
    # Ticks wrap at 2**30 ms on the ESP32; a difference over 2**29 ms (6.2
    # days) is garbage. A week of a still ghost, stepped a minute at a time
    # from just below the wrap: still_s keeps growing, never negative; stuck
    # stays set; the radar is never taken for stale.
    from ticks import ticks_add

    r = Radar(timeout_ms=120000, stuck_ms=4 * 3600000)
    t = ticks_add(0, -90000)
    frame = encode("still", still_cm=100, still_energy=50)
    r.feed(frame, t)
    prev = 0
    for i in range(1, 7 * 24 * 60 + 1):
        t = ticks_add(t, 60000)
        r.feed(frame, t)
        state, still_s, stale, stuck = r.status(t)
        assert state == "still" and not stale and still_s >= prev, (i, still_s)
        prev = still_s
        assert stuck == (still_s > 4 * 3600), (i, still_s)
    assert prev == (1 << 29) // 1000  # it stops growing at the cap (6.2 days)
    for _ in range(10):  # frames stop: stale after timeout_ms, whatever the wrap
        t = ticks_add(t, 60000)
        r.status(t)
    assert r.status(t)[2]


def test_only_data_frames_of_type_1_and_2_with_their_lengths():
    from ld2410 import FOOTER, HEADER

    def frame(kind, body_len):
        body = (
            bytes((kind, 0xAA, 2, 100, 0, 0, 100, 0, 50, 100, 0))
            + bytes(body_len - 13)
            + b"\x55\x00"
        )
        return HEADER + bytes((len(body), 0)) + body + FOOTER

    p = Parser()
    assert p.feed(frame(3, 13)) == []  # type 3: not a data frame, refused
    assert p.feed(frame(2, 35)) == []  # basic data with the engineering length
    assert p.feed(frame(1, 13)) == []  # engineering data with the basic length
    assert p.feed(frame(1, 35))[0][STATE] == "still"  # engineering mode: taken
    assert p.feed(frame(2, 13))[0][STATE] == "still"
    assert p.frames == 2 and p.dropped > 0
