import sys

from lifelong.cli import main

sys.exit(main())
