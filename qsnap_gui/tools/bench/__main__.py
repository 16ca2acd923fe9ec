"""A strategy's child process: ``python -m qsnap_gui.tools.bench --strategy NAME BAND...``."""

import sys

from qsnap_gui.tools.bench.strategies import main

sys.exit(main())
