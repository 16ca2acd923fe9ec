"""What a bench measures, as plain data (rendered as a table or JSON by ``render``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StrategyFigures:
    seconds: float
    rows: int
    peak_rss_mb: float
    connections: int | None = None  # connections that wrote at once (the floor says how many)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ViewTiming:
    """Seconds of one view's reads, taken again and again from the job's first commit to its
    end: the table changes under them all along."""

    median: float
    worst: float


@dataclass
class ViewFigures:
    """The views' reads while a snapshot job of the whole target runs in another process."""

    targets: ViewTiming  # the window's targets list
    cli_targets: ViewTiming  # `qsnap targets`, orphans included
    bands: ViewTiming  # the band table's population and missing counts
    shapes_seconds: float  # the per-shape counts the window reads in the background, once
    rounds: int  # how many times each view was read
    rounds_during_job: int  # of which the rounds that ended with the job still running


@dataclass
class StaleFigures:
    """Stale repair of one band against a force re-snapshot of it, each a qsnap process."""

    band_id: int
    band_rows: int
    stale_rows: int
    stale_seconds: float
    stale_written: int  # rows whose updated_at moved
    stale_rss_mb: float
    force_seconds: float
    force_written: int
    force_rss_mb: float
    equal: bool  # every row of the band equals the baseline after each run

    @property
    def ratio(self) -> float | None:
        return self.stale_seconds / self.force_seconds if self.force_seconds else None


@dataclass
class PreviewFigures:
    """A refresh's preview against the refresh's own membership step (steps 2-3 of DOMAIN.md,
    rolled back), each the median of runs in the bench's process on the same populations."""

    membership_seconds: float
    preview_seconds: float  # `populate --preview`: membership, diff, moves and offers left
    stale_seconds: float  # `populate --preview --stale`: also the stale check of kept rows

    @property
    def ratio(self) -> float | None:
        return self.preview_seconds / self.membership_seconds if self.membership_seconds else None


@dataclass
class WorldOptions:
    """The benchmark world: me_files, mean tags per me_file, and how the bench target's rows
    spread over its three bands (skewed: one band holds ~90 %; equal: a third each)."""

    tags_per_me_file: int = 40
    bands: str = "skewed"


@dataclass
class ScaleFigures:
    scale: int
    populations: int
    generator_seconds: float | None
    strategies: dict[str, StrategyFigures] = field(default_factory=dict)
    populate_seconds: float | None = None
    populate_rss_mb: float | None = None
    snapshots_equal: bool | None = None
    mismatches: int = 0
    views: ViewFigures | None = None
    stale: StaleFigures | None = None
    preview: PreviewFigures | None = None
    server: str = "embedded"
    settings: dict[str, str] = field(default_factory=dict)
    world: WorldOptions = field(default_factory=WorldOptions)
    tags: int | None = None
    band_rows: list[int] = field(default_factory=list)
    # what every qsnap process timed by wall clock spends before its work: `qsnap --version`
    process_start_seconds: float | None = None

    def ratio(self, a: str, b: str) -> float | None:
        if a in self.strategies and b in self.strategies and self.strategies[b].seconds:
            return self.strategies[a].seconds / self.strategies[b].seconds
        return None


@dataclass
class CommandFigures:
    """One qsnap command run as an operator runs it: its own process."""

    command: str
    seconds: float  # wall time of the process, start included (or of a read in-process)
    peak_rss_mb: float | None  # None for a read timed in the bench's own process
    rows: int | None = None  # rows written, where the command writes
    # the work itself: the scan a dry-run reports, the reads of `qsnap targets` timed in-process
    work_seconds: float | None = None


@dataclass
class ManyTargetsFigures:
    targets: int
    bands: int
    populations: int
    missing: int
    broken: int
    generator_seconds: float
    commands: list[CommandFigures] = field(default_factory=list)
    rows_equal: bool | None = None
    mismatches: int = 0
    left_to_fix: int | None = None  # what a backfill --dry-run after the run still finds
    process_start_seconds: float | None = None
    server: str = "embedded"
    settings: dict[str, str] = field(default_factory=dict)
