import sys

from qsnap_gui.cli.main import main

sys.exit(main())
