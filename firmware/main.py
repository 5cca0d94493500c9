# Starts the node. On the board the watchdog is armed before anything else:
# a boot that hangs, or fails and sits at the REPL, restarts the board.
# loader.py picks the firmware (the factory image, or an OTA update on
# trial, or safe mode) and is forgotten before the node is built (the heap
# is small). Whatever escapes the node (a MemoryError at import included)
# adds a byte to var/crashes and restarts the board, importing nothing: in
# a full heap an import fails too. loader.py reads the count at the next
# boot (docs/firmware.md, "Boot crashes and safe mode"). Small on purpose:
# this file is compiled at boot and its code stays in the heap.
import gc
import os
import sys

if sys.platform == "esp32":
    import machine

    machine.WDT(timeout=8000)  # the same 8 s as board/esp32.py, which feeds it
try:
    import loader

    t, s = loader.choose()
    del loader, sys.modules["loader"]
    import asyncio

    if s:
        import safe

        n = safe.run()
    else:
        import app

        n = app.main(trial=t)
        del app
    asyncio.run(n)
except BaseException as e:
    if isinstance(e, SystemExit):
        raise  # the unix port's reset itself
    sys.modules.clear()  # what the node had loaded, freed: room to count the crash
    gc.collect()
    try:
        os.mkdir("var")  # (a first boot that crashes: var/ is not there yet)
    except OSError:
        pass
    try:
        with open("var/crashes", "a") as f:
            f.write("x")  # one byte per crash: no number to parse
        sys.print_exception(e)
    except BaseException:
        pass
    if sys.platform == "esp32":
        machine.reset()
    print("board: reset")  # the unix port's reset: the process ends with 75 (board/unix.py)
    sys.exit(75)
