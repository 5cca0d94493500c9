# A tiny test runner for the real MicroPython interpreter (unix port):
#   cd firmware && micropython -X heapsize=64K tests/run.py
# Runs every test_* function of tests/test_*.py; exits 1 on any failure.
# The modules a test file imported are forgotten after it: from source, the
# whole firmware does not fit a 64 KB heap at once (docs/firmware.md).
import gc
import os
import sys

sys.path.insert(0, "")
sys.path.insert(0, "tests")

failed = 0
passed = 0
for name in sorted(os.listdir("tests")):
    if not (name.startswith("test_") and name.endswith(".py")):
        continue
    before = set(sys.modules)
    module = __import__(name[:-3])
    for attr in sorted(dir(module)):
        if not attr.startswith("test_"):
            continue
        try:
            getattr(module, attr)()
            passed += 1
            print("PASS", name, attr)
        except Exception as exc:  # report and go on
            failed += 1
            print("FAIL", name, attr, repr(exc))
            sys.print_exception(exc)
    del module
    for m in set(sys.modules) - before:
        del sys.modules[m]
    gc.collect()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
