"""The installed Qt binding survives a long session of progress signals.

PySide6 6.12.0 on CPython 3.11 drops a reference to True on every emit and aborts the process
after a few hundred; pyproject.toml excludes it. Run in a child so an abort fails one test.
"""

import subprocess
import sys

EMITS = """
from PySide6.QtCore import QCoreApplication, QObject, Signal
app = QCoreApplication([])
class Source(QObject):
    progress = Signal(int)
source = Source()
seen = []
source.progress.connect(seen.append)
for i in range(20000):
    source.progress.emit(i)
print(len(seen))
"""


def test_twenty_thousand_signals_do_not_abort_the_process():
    proc = subprocess.run(
        [sys.executable, "-c", EMITS],
        capture_output=True,
        text=True,
        timeout=120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "20000"
