"""What tests/test_warm.py runs in a warm interpreter's child instead of r2kd: `python -m warm_helper CMD`."""

import os
import signal
import sys
import time

command = sys.argv[1:]
if command[0] == "exit":
    print(f"exiting with {command[1]}", flush=True)
    sys.exit(int(command[1]))
elif command[0] == "echo":  # stdin, stdout, stderr and the working directory are the client's
    line = sys.stdin.readline().strip()
    print(f"out:{line}:{os.getcwd()}:{os.environ.get('WARM_TEST_VALUE')}")
    print(f"err:{line}", file=sys.stderr)
elif command[0] == "sleep":  # until a signal: record which one in the marker file, exit 3
    marker = command[1]

    def stop(signum, _frame):
        with open(marker + ".tmp", "w") as handle:  # whole or absent: the test polls for the file
            handle.write(f"{signal.Signals(signum).name} {os.getpid()}\n")
        os.replace(marker + ".tmp", marker)
        sys.exit(3)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"sleeping {os.getpid()}", flush=True)
    time.sleep(60)
    sys.exit(4)
elif command[0] == "raise":
    raise RuntimeError("an uncaught error")
