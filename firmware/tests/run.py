# A tiny test runner for the real MicroPython interpreter (unix port):
#   cd firmware && micropython tests/run.py
# Runs every test_* function of tests/test_*.py (or .mpy, precompiled: pytest
# runs them so, in a 64 KB heap); exits 1 on any failure. The modules a test
# file imported are forgotten after it.
import gc
import os
import sys

sys.path.insert(0, "")
sys.path.insert(0, "tests")

failed = 0
passed = 0
for name in sorted(os.listdir("tests")):
    if not name.startswith("test_") or not name.endswith((".py", ".mpy")):
        continue
    before = set(sys.modules)
    module = __import__(name.rsplit(".", 1)[0])
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
