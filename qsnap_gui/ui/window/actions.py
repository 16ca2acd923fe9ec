"""The window's actions, and when each may run: two tables.

``ACTIONS`` says what each action is (text, icon, shortcut, tip, the command it runs).
``RULES`` says why it may not run: a list of checks over one ``Situation``, the first reason
found disables the action and becomes its tooltip's "Unavailable: …" line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QKeySequence

from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.engine.views import BandRow
from qsnap_gui.store.db import POPULATE_PRIVILEGES, SNAPSHOT_PRIVILEGES
from qsnap_gui.ui.access import write_block
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobInfo, JobKind

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow


@dataclass(frozen=True)
class ActionSpec:
    name: str  # the window holds it as ``act_<name>``
    text: str
    icon: str
    shortcut: str | None
    tip: str
    command: str  # the method of ``Commands`` it triggers
    icon_text: str | None = None  # shorter text beside the toolbar icon


ACTIONS = (
    ActionSpec(
        "connect", "&Connect…", "connect", "Ctrl+O", "Connect to another database",
        "show_connect", "Connect",
    ),
    ActionSpec("reload", "&Reload", "reload", "F5", "Read targets and bands again, shape counts included", "reload"),
    ActionSpec(
        "preferences", "&Preferences…", "preferences", "Ctrl+,",
        "Batch size, threads, confirmations", "show_preferences",
    ),
    ActionSpec("quit", "&Quit", "quit", "Ctrl+Q", "Close qsnap", "quit"),
    ActionSpec(
        "refresh", "&Refresh Population", "refresh-population", "Ctrl+R",
        "Recalculate the target's populations, then snapshot every band", "refresh_population",
    ),
    ActionSpec(
        "snapshot_all", "Snapshot &all bands", "snapshot-all", "Ctrl+Shift+A",
        "Snapshot the missing rows of every band of the target", "snapshot_all", "Snapshot all",
    ),
    ActionSpec(
        "resume", "Res&ume stuck target", "resume", "Ctrl+Shift+R",
        "Refresh a target left in 'populating' again: membership, snapshots, status", "resume",
        "Resume",
    ),
    ActionSpec(
        "depopulate", "&Depopulate…", "depopulate", "Ctrl+Shift+Del",
        "Delete the target's populations and mark it not populated", "depopulate", "Depopulate",
    ),
    ActionSpec(
        "snap_missing", "Snapshot band (&missing)", "snapshot", "Ctrl+B",
        "Snapshot the band's rows that have none yet", "snapshot_missing", "Snapshot",
    ),
    ActionSpec(
        "snap_repair", "Snapshot band (r&epair)", "snapshot-repair", "Ctrl+Shift+B",
        "Also rebuild every snapshot that is not a well-formed envelope", "snapshot_repair",
    ),
    ActionSpec(
        "snap_force", "Snapshot band (&force)", "snapshot-force", "Ctrl+Alt+B",
        "Rebuild every snapshot of the band, stale ones included", "snapshot_force",
    ),
    ActionSpec(
        "cancel", "&Cancel job", "cancel", "Ctrl+.",
        "Stop the selected job after its batch in flight", "cancel", "Cancel",
    ),
    ActionSpec(
        "cancel_all", "Cancel a&ll jobs", "cancel-all", "Ctrl+Shift+.", "Stop every running job",
        "cancel_all",
    ),
    ActionSpec("retry", "Re&try job", "reload", None, "Run the job again", "retry_clicked"),
    ActionSpec(
        "job_cancel", "&Cancel job", "cancel", None, "Stop this job after its batch in flight",
        "cancel_clicked",
    ),
    ActionSpec(
        "filter", "&Filter targets", "filter", "Ctrl+Shift+F", "Type to filter the targets",
        "focus_filter",
    ),
    ActionSpec(
        "search", "&Find me_file…", "filter", "Ctrl+F",
        "Find a me_file by id or display-name prefix and inspect it", "focus_search",
    ),
    ActionSpec(
        "population", "Band &population…", "snapshot-all", "Ctrl+P",
        "List the band's populations page by page; double-click inspects one", "show_population",
    ),
    ActionSpec(
        "backfill", "&Backfill snapshots…", "snapshot-repair", "Ctrl+Shift+K",
        "Find every missing or broken snapshot and fix them, band by band", "show_backfill",
    ),
    ActionSpec(
        "open_logs", "Open &log folder", "info", None,
        "Open the folder of qsnap's log files (every message, with tracebacks)", "open_log_folder",
    ),
    ActionSpec("about", "&About qsnap", "qsnap", None, "Version and licence", "about"),
)  # fmt: skip


def build_actions(window: MainWindow, commands: object) -> None:
    """Make every action of ``ACTIONS`` as ``window.act_<name>``, wired to its command."""
    for spec in ACTIONS:
        action = QAction(icon(spec.icon), spec.text, window)
        if spec.shortcut:
            action.setShortcut(QKeySequence(spec.shortcut))
        action.setStatusTip(spec.tip)
        action.setProperty("tip", spec.tip)
        action.triggered.connect(getattr(commands, spec.command))
        if spec.icon_text:
            action.setIconText(spec.icon_text)
        enable(action, None)
        setattr(window, f"act_{spec.name}", action)


def enable(action: QAction, reason: str | None) -> None:
    action.setEnabled(reason is None)
    tip = action.property("tip") or action.text().replace("&", "")
    shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
    keys = f" ({shortcut})" if shortcut else ""
    action.setToolTip(f"{tip}{keys}" if reason is None else f"{tip}{keys}\nUnavailable: {reason}")


def cancellable_jobs(window: MainWindow) -> list[int]:
    """What Cancel job stops: the selected band's jobs, else the target's refresh, else its jobs."""
    if window.controller is None:
        return []
    active = window.controller.active()
    band = window.current_band()
    on_band = [j.id for j in active if band and j.band_id == band.id]
    if on_band:
        return on_band
    target = window.current_target()
    on_target = [j for j in active if target and j.target_id == target.id]
    refreshes = [j.id for j in on_target if j.kind is JobKind.REFRESH]
    return refreshes or [j.id for j in on_target]


@dataclass(frozen=True)
class Situation:
    """Everything the rules look at, read once per update."""

    connected: bool
    target: TargetRow | None
    band: BandRow | None
    active: list[JobInfo]
    on_target: list[JobInfo]
    depopulating: bool
    bands_loaded: bool
    band_count: int
    cancellable: bool
    clicked_job: JobInfo | None
    populate_block: str | None
    snapshot_block: str | None

    @classmethod
    def of(cls, window: MainWindow) -> Situation:
        target = window.current_target()
        active = window.controller.active() if window.controller else []
        return cls(
            connected=window.database is not None,
            target=target,
            band=window.current_band(),
            active=active,
            on_target=[j for j in active if target and j.target_id == target.id],
            depopulating=target is not None and target.id in window.busy_targets,
            bands_loaded=target is not None and window.bands_model.target_id == target.id,
            band_count=window.bands_model.rowCount(),
            cancellable=bool(cancellable_jobs(window)),
            clicked_job=window.clicked_job,
            populate_block=write_block(window.database, POPULATE_PRIVILEGES),
            snapshot_block=write_block(window.database, SNAPSHOT_PRIVILEGES),
        )


Rule = Callable[[Situation], str | None]


def not_connected(s: Situation) -> str | None:
    return None if s.connected else "not connected"


def no_target(s: Situation) -> str | None:
    return not_connected(s) or (None if s.target else "select a target first")


def no_band(s: Situation) -> str | None:
    return None if s.band else "select a band first"


def cannot_populate(s: Situation) -> str | None:
    return s.populate_block


def cannot_snapshot(s: Situation) -> str | None:
    return s.snapshot_block


def busy_target(s: Situation) -> str | None:
    if s.on_target:
        return "a job is running on this target"
    return "depopulating this target" if s.depopulating else None


def no_bands(s: Situation) -> str | None:
    return "this target has no bands" if s.bands_loaded and not s.band_count else None


def bands_loading(s: Situation) -> str | None:
    return None if s.bands_loaded else "the bands are loading"


def refresh_on_target(s: Situation) -> str | None:
    if any(j.kind is JobKind.REFRESH for j in s.on_target):
        return "a Refresh Population is running on this target"
    return None


def band_busy(s: Situation) -> str | None:
    if s.band and any(j.band_id == s.band.id for j in s.active):
        return "a job is already running on this band"
    return None


def not_stuck(s: Situation) -> str | None:
    if s.target is None or s.target.stuck:
        return None
    return "only a stuck target (populating, no job running) can be resumed"


def nothing_to_depopulate(s: Situation) -> str | None:
    t = s.target
    if t and not t.population and t.population_status == "not_populated":
        return "nothing to depopulate"
    return None


def nothing_to_cancel(s: Situation) -> str | None:
    return None if s.cancellable else "no job is running on the selection"


def no_job_running(s: Situation) -> str | None:
    return None if s.active else "no job is running"


def no_job_clicked(s: Situation) -> str | None:
    return None if s.clicked_job else "no job selected"


def job_running(s: Situation) -> str | None:
    return "the job is still running" if s.clicked_job and s.clicked_job.active else None


def job_ended(s: Situation) -> str | None:
    return None if s.clicked_job and s.clicked_job.active else "the job has ended"


SNAPSHOT_BAND = (not_connected, no_band, cannot_snapshot, refresh_on_target, band_busy)

RULES: dict[str, tuple[Rule, ...]] = {
    "refresh": (no_target, cannot_populate, busy_target, no_bands),
    "search": (not_connected,),
    "backfill": (not_connected,),
    "population": (not_connected, no_band),
    "snap_missing": SNAPSHOT_BAND,
    "snap_repair": SNAPSHOT_BAND,
    "snap_force": SNAPSHOT_BAND,
    "snapshot_all": (no_target, cannot_snapshot, busy_target, no_bands, bands_loading),
    "resume": (no_target, not_stuck, cannot_populate, busy_target),
    "depopulate": (no_target, cannot_populate, busy_target, nothing_to_depopulate),
    "cancel": (nothing_to_cancel,),
    "cancel_all": (no_job_running,),
    "retry": (no_job_clicked, job_running),
    "job_cancel": (no_job_clicked, job_ended),
    "reload": (not_connected,),
}


def first_reason(rules: tuple[Rule, ...], situation: Situation) -> str | None:
    return next((r for r in (rule(situation) for rule in rules) if r), None)


def update_actions(window: MainWindow) -> list[JobInfo]:
    """Enable each ruled action or say why not; returns the active jobs it saw."""
    situation = Situation.of(window)
    for name, rules in RULES.items():
        enable(getattr(window, f"act_{name}"), first_reason(rules, situation))
    return situation.active
