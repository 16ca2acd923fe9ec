"""The bench's figures as the table it prints, or as JSON (``--json``)."""

from __future__ import annotations

from dataclasses import asdict

from qsnap_gui.tools.bench.figures import ManyTargetsFigures, ScaleFigures, ViewTiming


def _server_line(label: str, settings: dict[str, str]) -> str:
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    return f"server: {label}" + (f" ({shown})" if shown else "")


def render(results: list[ScaleFigures]) -> str:
    lines = []
    for f in results[:1]:
        lines.append(_server_line(f.server, f.settings))
    lines.append(
        f"{'scale':>9} {'rows':>9} {'strategy':<10} {'seconds':>8} {'rows/s':>9} {'peak RSS':>9}"
    )
    for f in results:
        tags = f", {f.tags / f.scale:.1f} tags per me_file" if f.tags else ""
        bands = "/".join(f"{n:,}" for n in f.band_rows)
        lines.append(
            f"{'':>9} world: {f.scale:,} me_files{tags}, "
            f"{f.world.bands} bands" + (f" ({bands} rows)" if bands else "")
        )
        for name, s in f.strategies.items():
            via = (
                f" ({s.connections} connection{'s' * (s.connections != 1)})"
                if s.connections
                else ""
            )
            lines.append(
                f"{f.scale:>9,} {f.populations:>9,} {name:<10} {s.seconds:>8.2f} "
                f"{s.rows_per_second:>9,.0f} {s.peak_rss_mb:>6.0f} MB{via}"
            )
        speedup, floor = f.ratio("baseline", "qsnap"), f.ratio("qsnap", "floor")
        if speedup is not None and floor is not None:
            json_floor = f.ratio("qsnap", "floor_json")
            same_json = (
                f" ({json_floor:.2f}x writing the same snapshots precomputed)"
                if json_floor is not None
                else ""
            )
            lines.append(
                f"{'':>9} qsnap is {speedup:.1f}x faster than the baseline and "
                f"{floor:.2f}x the write floor{same_json}; snapshots "
                + (
                    "jsonb-equal for every row"
                    if f.snapshots_equal
                    else f"DIFFER in {f.mismatches} rows"
                )
            )
        if f.stale is not None:
            s = f.stale
            ratio = f"{s.ratio:.0%}" if s.ratio is not None else "?"
            lines.append(
                f"{'':>9} stale repair of {s.stale_rows:,} of band {s.band_id}'s {s.band_rows:,} "
                f"rows: backfill --include stale {s.stale_seconds:.2f}s, {s.stale_written:,} rows "
                f"written, {s.stale_rss_mb:.0f} MB; force re-snapshot {s.force_seconds:.2f}s, "
                f"{s.force_written:,} rows written, {s.force_rss_mb:.0f} MB; {ratio} of the "
                "force time; rows "
                + ("equal to the reference" if s.equal else "DIFFER from the reference")
            )
        if f.preview is not None:
            p = f.preview
            lines.append(
                f"{'':>9} Refresh Population's membership step {p.membership_seconds:.2f}s; "
                f"populate --preview {p.preview_seconds:.2f}s ({p.ratio:.2f}x the membership "
                f"step); with --stale, which rebuilds every kept snapshot, {p.stale_seconds:.2f}s"
            )
        if f.process_start_seconds is not None:
            lines.append(
                f"{'':>9} qsnap commands are timed as operators run them, start included "
                f"(a qsnap process starts and exits in {f.process_start_seconds:.2f}s)"
            )
        if f.populate_seconds is not None:
            gen = f"{f.generator_seconds:.1f}s" if f.generator_seconds is not None else "reused"
            lines.append(
                f"{'':>9} qsnap populate (membership + diff + snapshots): "
                f"{f.populate_seconds:.2f}s, {f.populate_rss_mb:.0f} MB; generator: {gen}"
            )
        if f.views is not None:
            v = f.views
            lines.append(
                f"{'':>9} views while a snapshot job of the target runs (median, worst of "
                f"{v.rounds} reads, {v.rounds_during_job} of them while it ran): targets list "
                f"{_timing(v.targets)} (command line, orphans counted: {_timing(v.cli_targets)}), "
                f"band table {_timing(v.bands)}, per-shape counts {v.shapes_seconds:.2f}s once in "
                "the background"
            )
    return "\n".join(lines)


def _timing(t: ViewTiming) -> str:
    return f"{t.median:.2f}s, {t.worst:.2f}s"


def to_json(results: list[ScaleFigures]) -> list[dict]:
    out = []
    for f in results:
        item = asdict(f)
        for name, s in f.strategies.items():
            item["strategies"][name]["rows_per_second"] = round(s.rows_per_second)
        item["qsnap_speedup_over_baseline"] = f.ratio("baseline", "qsnap")
        item["qsnap_over_write_floor"] = f.ratio("qsnap", "floor")
        item["qsnap_over_json_floor"] = f.ratio("qsnap", "floor_json")
        if f.stale is not None:
            item["stale"]["stale_over_force"] = f.stale.ratio
        if f.preview is not None:
            item["preview"]["preview_over_membership"] = f.preview.ratio
        out.append(item)
    return out


def render_many(f: ManyTargetsFigures) -> str:
    lines = [
        _server_line(f.server, f.settings),
        f"world: {f.targets:,} targets, {f.bands:,} bands, {f.populations:,} populations, "
        f"{f.missing:,} missing and {f.broken:,} broken snapshots "
        f"(generated in {f.generator_seconds:.1f}s)",
        f"{'command':<44} {'seconds':>8} {'of which':>9} {'rows':>9} {'rows/s':>9} {'peak RSS':>9}",
    ]
    for c in f.commands:
        rows = f"{c.rows:,}" if c.rows is not None else "-"
        rate = f"{c.rows / c.seconds:,.0f}" if c.rows and c.seconds else "-"
        work = f"{c.work_seconds:.2f}" if c.work_seconds is not None else "-"
        rss = f"{c.peak_rss_mb:>6.0f} MB" if c.peak_rss_mb else f"{'-':>9}"
        lines.append(f"{c.command:<44} {c.seconds:>8.2f} {work:>9} {rows:>9} {rate:>9} {rss}")
    lines.append(
        "seconds: the whole process, start included (the window's list: read in the bench's "
        "process); of which: the scan a dry-run reports, qsnap targets' reads timed in the "
        "bench's process"
    )
    if f.process_start_seconds is not None:
        lines.append(
            "each command's own process, start included "
            f"(a qsnap process starts and exits in {f.process_start_seconds:.2f}s)"
        )
    lines.append(
        "rows equal to the reference after the run: "
        + ("all" if f.rows_equal else f"NO, {f.mismatches:,} differ")
        + f"; rows a backfill --dry-run still finds to fix: {f.left_to_fix}"
    )
    return "\n".join(lines)


def many_to_json(f: ManyTargetsFigures) -> dict:
    item = asdict(f)
    for c in item["commands"]:
        c["rows_per_second"] = (
            round(c["rows"] / c["seconds"]) if c["rows"] and c["seconds"] else None
        )
    return item
