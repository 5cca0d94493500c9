from ld2410 import HEADER, Parser, encode


def test_one_frame():
    frame = encode("still", still_cm=120, still_energy=60, detect_cm=130)
    assert len(frame) == 23
    [r] = Parser().feed(frame)
    assert r.state == "still" and r.still_cm == 120 and r.still_energy == 60
    assert r.detect_cm == 130


def test_hand_written_frame():
    # A moving target at 0x0123 cm, energy 0x40; bytes written out by hand.
    frame = bytes([0xF4, 0xF3, 0xF2, 0xF1, 0x0D, 0x00, 0x02, 0xAA, 0x01, 0x23, 0x01, 0x40,
                   0x00, 0x00, 0x00, 0x23, 0x01, 0x55, 0x00, 0xF8, 0xF7, 0xF6, 0xF5])
    [r] = Parser().feed(frame)
    assert r.state == "moving" and r.move_cm == 0x123 and r.move_energy == 0x40


def test_garbage_and_split_frames():
    stream = b"\x00\xff junk" + encode("moving", move_cm=80) + b"\xf4\xf3 noise" \
        + encode("none") + HEADER[:2]
    p = Parser()
    got = []
    # Fed in pieces of every size 1..7, as a UART hands them over.
    i = 0
    size = 1
    while i < len(stream):
        got += p.feed(stream[i:i + size])
        i += size
        size = size % 7 + 1
    assert [r.state for r in got] == ["moving", "none"]
    assert p.dropped > 0
    got = p.feed(HEADER[2:] + encode("both")[4:])  # the split header completes a frame
    assert [r.state for r in got] == ["both"]


def test_corrupt_frames_are_skipped():
    good = encode("still", still_cm=50)
    bad_footer = good[:-1] + b"\x00"
    bad_head = good[:7] + b"\xab" + good[8:]
    bad_length = good[:4] + b"\xff\x00" + good[6:]
    bad_state = good[:8] + b"\x07" + good[9:]
    p = Parser()
    got = p.feed(bad_footer + bad_head + bad_length + bad_state + good)
    assert [r.state for r in got] == ["still"] and p.frames == 1


def test_random_noise_never_crashes():
    p = Parser()
    seed = 1
    for _ in range(2000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        p.feed(bytes([seed & 0xFF, (seed >> 8) & 0xFF, 0xF4, (seed >> 16) & 0xFF]))
    assert p.feed(encode("none"))[-1].state == "none"
