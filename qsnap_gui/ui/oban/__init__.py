"""Jobs on Qlarius's Oban workers in the window.

* A "Run on" choice in the toolbar (this computer / Qlarius workers), shown only when the
  database has a readable ``oban_jobs`` table; with Qlarius workers chosen, Snapshot band
  (missing), Snapshot all bands and Refresh Population enqueue Oban jobs instead of running here.
  Snapshot jobs go to a worker the application marks deprecated: the log says so, and without a
  completed job of it in ``oban_jobs`` the window asks before enqueueing.
* The Oban jobs beside the local ones in the Jobs dock: state, attempt x of max, node, times,
  progress of a band job (NULL snapshots left), the error of each attempt; Retry and Cancel.
* The pending-jobs view (Jobs > Qlarius worker jobs…): every snapshot, population and backfill
  job in ``oban_jobs``, filterable by every state of the table's schema version and by worker.

Modules: ``monitor`` (detection, polling, operations on a reader pool), ``jobs_table`` (the
model, view and Retry/Cancel actions), ``panels`` (dock panel, pending view), ``integration``
(what MainWindow asks).
"""

from qsnap_gui.ui.oban.integration import ObanIntegration

__all__ = ["ObanIntegration"]
