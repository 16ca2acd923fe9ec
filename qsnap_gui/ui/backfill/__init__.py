"""Tools > Backfill snapshots…: one module per wizard page, the threads and jobs in ``work``."""

from qsnap_gui.ui.backfill.common import Page
from qsnap_gui.ui.backfill.wizard import BackfillWizard

__all__ = ["BackfillWizard", "Page"]
