"""``python -m lifelong.lm {lm,lm-experiment} ...``: the same commands as ``lifelong lm`` / ``lm-experiment``."""

import sys

from lifelong.lm.cli import main

sys.exit(main())
