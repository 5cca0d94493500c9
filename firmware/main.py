# Starts the node. loader.py picks the firmware (the factory image, or an OTA
# update on trial) and is forgotten before the node is built (the heap is
# small); it comes back only if the node crashes, to roll an update back.
import sys

try:  # the unix port after `make firmware`: the .mpy build, not the sources
    # (compiling from source at import needs more than a 64 KB heap). A board
    # has no build/: provisioning put the .mpy files in its root.
    import os

    os.stat("build/app.mpy")
    sys.path.insert(0, "build")
    print("main: modules from build/ (run `make firmware` after editing firmware/)")
    del os
except OSError:
    pass

import loader

trial = loader.choose()
del loader, sys.modules["loader"]
try:
    import asyncio

    import app

    node = app.main(trial=trial)
    del app
    asyncio.run(node)
except Exception as e:  # KeyboardInterrupt and SystemExit pass
    import loader

    loader.crashed(e)
