# An OTA update on trial (loader.py): rolled back by itself when it is not
# online (app.py marks var/fw.json "ok") within ota_confirm_s.
import asyncio
from time import ticks_diff, ticks_ms

from loader import PTR, read, reset


async def watch(slot):
    v = (read("config.json") or {}).get("ota_confirm_s", 300)
    limit = (v if type(v) is int and 5 <= v <= 3600 else 300) * 1000
    t0 = ticks_ms()
    while (read(PTR) or {}).get("state") == "trial":
        if ticks_diff(ticks_ms(), t0) > limit:
            reset("not online within %d s" % (limit // 1000), slot, read(PTR))
        await asyncio.sleep_ms(1000)
