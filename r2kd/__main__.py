import sys

from r2kd.cli import main

sys.exit(main())
