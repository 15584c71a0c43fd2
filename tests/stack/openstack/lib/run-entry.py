#!/usr/bin/python3
"""Run a Python console entry point by name, as its console script would.

    run-entry.py PROG MODULE:FUNC [ARGS...]

Debian's python3-<service> library packages ship the code but not the
daemon scripts (those are in the daemon packages, which we do not install):
this stands in for /usr/bin/nova-conductor and friends.  PROG becomes
sys.argv[0], which oslo.config and oslo.log use as the program name.
"""
import importlib
import sys

if len(sys.argv) < 3 or ":" not in sys.argv[2]:
    sys.stderr.write(__doc__)
    sys.exit(2)
prog, target = sys.argv[1], sys.argv[2]
module, func = target.split(":", 1)
sys.argv = [prog] + sys.argv[3:]
sys.exit(getattr(importlib.import_module(module), func)())
