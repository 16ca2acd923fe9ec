"""Qt item models over the core's plain rows; each is guarded (see ``base``)."""

from qsnap_gui.ui.models.bands import BandsModel
from qsnap_gui.ui.models.base import (
    COVERAGE_ROLE,
    ERROR_TEXT,
    ID_ROLE,
    JOB_ROLE,
    SORT_ROLE,
    TableModel,
    guard_model,
)
from qsnap_gui.ui.models.jobs import JobsModel, job_text
from qsnap_gui.ui.models.targets import TargetsModel, TargetsProxy, status_text

__all__ = [
    "COVERAGE_ROLE",
    "ERROR_TEXT",
    "ID_ROLE",
    "JOB_ROLE",
    "SORT_ROLE",
    "BandsModel",
    "JobsModel",
    "TableModel",
    "TargetsModel",
    "TargetsProxy",
    "guard_model",
    "job_text",
    "status_text",
]
