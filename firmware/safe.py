# Safe mode: the room alone, after SAFE_AFTER crashes in a row at boot
# (main.py counts them, loader.py chooses this). No network, no radar, no
# flash writes: only what keeps a mother safe. The button lights the
# corridor lamp and the button's ring and sounds the buzzer; the staff key
# turns them off. The status LED is lit steady (never so in normal running).
# After RETRY_MS with nothing lit, the board restarts to try the firmware
# again, with the count one short of safe mode: one more crash, back here.
import asyncio

from ticks import ticks_diff, ticks_ms

RETRY_MS = 3600000
DEBOUNCE = 3  # reads, 10 ms apart: a contact must hold 30 ms


async def room(b, reset):
    lit = False
    held = [0, 0]
    t0 = ticks_ms()
    b.out(2, True)
    while True:
        b.feed()
        _, button, staff = b.inputs()
        held[0] = held[0] + 1 if button else 0
        held[1] = held[1] + 1 if staff else 0
        if held[0] == DEBOUNCE and not lit:
            lit = True
            b.out(0, True)
            b.out(1, True)
            print("safe: EMERGENCY CALL (the room only: no network in safe mode)")
        elif held[1] == DEBOUNCE and lit:
            lit = False
            b.out(0, False)
            b.out(1, False)
            t0 = ticks_ms()
            print("safe: staff key: off")
        if not lit and ticks_diff(ticks_ms(), t0) > RETRY_MS:
            with open("var/crashes", "w") as f:  # noqa: ASYNC230 (no async files here)
                f.write("xx")  # loader.SAFE_AFTER - 1 (a byte per crash)
            reset()
        await asyncio.sleep_ms(10)


def run():
    """The safe mode's coroutine (main.py runs it)."""
    import config
    from board import module

    try:
        cfg = config.load()
    except config.ConfigError:
        cfg = config.fallback()
    m = module()
    b = m.Board(cfg)
    # The unix port's simulated room runs too (not the board's Wi-Fi); kept
    # referenced on the board object.
    b.safe_tasks = [asyncio.create_task(fn(b)) for name, fn in b.tasks(None) if name == "sim"]
    print("safe: running: button -> lamp and buzzer, staff key -> off")
    return room(b, m.reset)
