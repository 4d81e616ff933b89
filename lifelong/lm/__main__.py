"""``python -m lifelong.lm {lm,lm-experiment} ...`` until the main ``lifelong`` CLI wires these commands."""

import sys

from lifelong.lm.cli import main

sys.exit(main())
