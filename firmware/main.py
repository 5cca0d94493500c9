# Starts the node. loader.py picks the firmware (the factory image, or an OTA
# update on trial) and is forgotten before the node is built (the heap is
# small); it comes back only if the node crashes, to roll an update back.
import sys

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
