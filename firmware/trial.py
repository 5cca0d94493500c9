# An OTA update on trial (loader.py). It is confirmed (var/fw.json "ok")
# only when it has proven itself for ota_confirm_s (config.json, 300 s by
# default): no task restarted in all that time, and a telemetry message of
# it acknowledged by the broker (PUBACK). A task restart rolls it back at
# once; no acknowledged telemetry by the end of the time, too. A release
# whose publisher crashes, or that never gets a message through, would
# never deliver a call: it must not stay. Time is read through ticks.py, as
# everywhere in the firmware (the unix port's clock is the ESP32's period,
# and accelerated under MAMAROOM_TICKS_FAST). This file is never replaced by
# an update but ticks.py can be: an update without one is still watched, on
# time's own ticks (its interval is under an hour: no wrap to fear).
import asyncio
import gc

try:
    from ticks import ticks_diff, ticks_ms
except ImportError:
    from time import ticks_diff, ticks_ms  # type: ignore[assignment]

from loader import PTR, read, reset, write


async def watch(slot, node):
    v = (read("config.json") or {}).get("ota_confirm_s", 300)
    limit = (v if type(v) is int and 5 <= v <= 3600 else 300) * 1000
    t0 = ticks_ms()
    acked = False
    # The pointer on trial, read once: a rollback cut short by a MemoryError
    # (after it wrote the pointer back) is tried again from it, never from
    # the rolled-back pointer (that would "roll back" the old firmware too).
    on_trial = read(PTR)
    while True:
        await asyncio.sleep_ms(1000)
        # A telemetry message of it acknowledged (mqtt.py's PUBACK watch; a
        # release without that watch is never proven: rolled back).
        if getattr(node.mqtt, "watched", False):
            acked = True
        why = None
        if node.sup.restarts:  # any since boot
            why = "a task restarted on trial"
        elif ticks_diff(ticks_ms(), t0) >= limit:
            if not acked:
                why = "no telemetry acknowledged within %d s" % (limit // 1000)
        else:
            continue
        if why:
            try:
                reset(why, slot, on_trial)
            except MemoryError:  # a heap too short to roll back: again in a second
                gc.collect()
            continue
        fw = read(PTR) or {}
        fw["state"] = "ok"
        write(PTR, fw)
        print("trial: %s proven for %d s: confirmed" % (fw.get("version"), limit // 1000))
        node.ota_note = "updated to %s" % fw.get("version")
        node.due["telemetry"] = None  # say so now
        return
