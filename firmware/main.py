# Starts the node. loader.py picks the firmware (the factory image, or an OTA
# update on trial) and builds the node; the loader is forgotten before the
# node runs (the heap is small), and brought back only if the node crashes.
import sys

import loader

node = loader.start()
del loader, sys.modules["loader"]
try:
    import asyncio

    asyncio.run(node)
except Exception as e:  # KeyboardInterrupt and SystemExit pass
    import loader

    loader.crashed(e)
