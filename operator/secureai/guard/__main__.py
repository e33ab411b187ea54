"""``python -m secureai.guard --config PATH [--insecure-listen]``."""

import sys

from secureai.guard import main

sys.exit(main())
