"""The me_file inspector, for the main window to host.

* ``InspectorWidget(database)``: memberships, snapshot tree, raw JSON, why-matched, stale check,
  re-snapshot of one row, copy JSON and save-as-CSV. ``open_me_file(id, band_id=None)``.
* ``SearchField(database)``: the toolbar search (me_file id or display-name prefix, paged
  results); its ``focus_action`` carries Ctrl+F. Emits ``meFileActivated(int)``.
* ``BandPopulationView(database, band_id)``: a band's rows page by page, filterable by shape;
  a double-click emits ``meFileActivated(int)``.

Every database call runs on a ``TaskRunner`` pool and goes through ``qsnap_gui.engine.views``.
"""

from qsnap_gui.ui.inspector.population import BandPopulationView
from qsnap_gui.ui.inspector.search import SearchField
from qsnap_gui.ui.inspector.widget import InspectorWidget

__all__ = ["BandPopulationView", "InspectorWidget", "SearchField"]
