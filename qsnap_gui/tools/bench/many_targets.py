"""``qsnap bench --many-targets N``: the marketplace shape of many small audiences.

N targets of three bands (outer, ring, Bullseye asking for one, two and three trait groups,
each group every answer of one parent), ten populations per band: three NULL, four broken
(bare array, null values, legacy flat, empty object or another shape) and three good. The
populations are blocks of me_files, not a Refresh Population's result: backfill and the
views, which are timed here, read the rows as they are. ``qsnap backfill --dry-run``,
``qsnap backfill --yes`` and ``qsnap targets`` each run in their own process, as operators
run them; afterwards every row must equal a reference built in one SQL statement of the
bench's own from DOMAIN.md's rules (compared up to tie order with the codec's ``same_sql``).
"""

from __future__ import annotations

import json
import re
import time

from sqlalchemy import Engine, text

from qsnap_gui.domain.codec import broken_sql, same_sql
from qsnap_gui.engine import views
from qsnap_gui.engine.backfill import OFFERS_LEFT_NULL
from qsnap_gui.engine.targets import list_targets
from qsnap_gui.store.db import make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.queries import population_orphans
from qsnap_gui.tools.bench.children import process_start, qsnap_command, run_child
from qsnap_gui.tools.bench.figures import CommandFigures, ManyTargetsFigures
from qsnap_gui.tools.bench.runs import UNTOUCHED, median_seconds
from qsnap_gui.tools.bench.servers import BenchServer
from qsnap_gui.tools.bench.worlds import autovacuum, prepare
from qsnap_gui.tools.demo import BASE_TIME, SHAPED, DemoSpec, generate_demo

BANDS_PER_TARGET = 3
ROWS_PER_BAND = 10
REFERENCE_TABLE = "qsnap_bench_reference"
# the shape of a band's k-th row (k = 0..9), as a bucket of the demo's SHAPED: three NULL,
# bare array, null values, legacy flat, empty object or another broken shape, three good
BUCKETS = "(array[700, 700, 700, 610, 625, 632, 636, 0, 0, 0])"


def many_name(targets: int) -> str:
    return f"qsnap_bench_many_{targets}"


def me_files_for(targets: int) -> int:
    """A pool of me_files each in a few targets' audiences: 10 per target, 1,000 to 20,000."""
    return max(1_000, min(20_000, 10 * targets))


def _marker(targets: int) -> str:
    return f"qsnap bench: {targets} targets"


def _ready(engine: Engine, targets: int) -> bool:
    """Whether a kept world of this many targets is complete (its reference table, made
    last, carries the marker)."""
    with engine.connect() as conn:
        found = conn.execute(
            text("select obj_description(to_regclass(:t), 'pg_class')"), {"t": REFERENCE_TABLE}
        ).scalar()
    return found == _marker(targets)


def generate_many(engine: Engine, targets: int, say) -> None:
    """The demo's me_files and tags, then the targets, bands, groups and populations made in
    SQL, and the reference snapshot of every population."""
    generate_demo(
        engine,
        DemoSpec(me_files=me_files_for(targets), seed=1, targets=1, bands_per_target=3),
        reset=True,
    )
    say(f"many targets: {targets} targets over {me_files_for(targets):,} me_files")
    params = {
        "n": targets,
        "m": me_files_for(targets),
        "at": BASE_TIME,
        "rows": ROWS_PER_BAND,
        "per_target": BANDS_PER_TARGET * ROWS_PER_BAND,
    }
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = off"))
        conn.execute(
            text(
                "truncate targets, target_bands, trait_groups, trait_group_traits, "
                "target_band_trait_groups, target_populations, offers, ad_events"
            )
        )
        parents = list(
            conn.execute(
                text(
                    "select p.id from traits p where p.parent_trait_id is null "
                    "and p.input_type <> 'single_select_zip' "
                    "and exists (select 1 from traits c where c.parent_trait_id = p.id) "
                    "order by p.id"
                )
            ).scalars()
        )
        params["parents"], params["np"] = parents, len(parents)
        statements = [
            # targets and their bands: Ring 2 (outermost), Ring 1, Bullseye
            "insert into targets (id, title, description, marketer_id, population_status, "
            "last_populated_at, created_at, updated_at) "
            "select t, 'Audience ' || t, null, 1 + t % 50, 'populated', :at, :at, :at "
            "from generate_series(1, :n) t",
            "insert into target_bands (id, target_id, title, is_bullseye, created_at, "
            "updated_at) select (t - 1) * 3 + b, t, "
            "case b when 3 then 'Bullseye' when 2 then 'Ring 1' else 'Ring 2' end, "
            "case when b = 3 then '1' else '0' end, :at, :at "
            "from generate_series(1, :n) t cross join generate_series(1, 3) b",
            # three groups per target, each every answer of one parent (three distinct ones)
            "insert into trait_groups (id, title, parent_trait_id, marketer_id, created_at, "
            "updated_at) select (t - 1) * 3 + g, p.trait_name || ': all', p.id, 1 + t % 50, "
            ":at, :at from generate_series(1, :n) t cross join generate_series(1, 3) g "
            "join traits p on p.id = (cast(:parents as int[]))[1 + (t + (g - 1) * 11) % :np]",
            "insert into trait_group_traits (trait_group_id, trait_id, created_at, updated_at) "
            "select g.id, c.id, :at, :at from trait_groups g "
            "join traits c on c.parent_trait_id = g.parent_trait_id",
            "insert into target_band_trait_groups (target_band_id, trait_group_id, created_at, "
            "updated_at) select (t - 1) * 3 + b, (t - 1) * 3 + g, :at, :at "
            "from generate_series(1, :n) t cross join generate_series(1, 3) b "
            "cross join generate_series(1, 3) g where g <= b",
            # ten me_files per band, a block of consecutive ones per target
            "insert into target_populations (id, target_band_id, me_file_id, created_at, "
            "updated_at) select (t - 1) * :per_target + k + 1, (t - 1) * 3 + 1 + k / :rows, "
            "1 + ((t - 1) * :per_target + k) % :m, :at, :at "
            "from generate_series(1, :n) t cross join generate_series(0, :per_target - 1) k",
        ]
        for statement in statements:
            conn.execute(text(statement), params)
        for table, value in (
            ("targets", targets),
            ("target_bands", targets * 3),
            ("trait_groups", targets * 3),
            ("target_populations", targets * params["per_target"]),
        ):
            conn.execute(
                text(f"select setval(pg_get_serial_sequence('{table}', 'id'), :v)"), {"v": value}
            )
        conn.execute(text(f"drop table if exists {REFERENCE_TABLE}"))
        conn.execute(text(f"create table {REFERENCE_TABLE} as {REFERENCE_SQL}"))
        conn.execute(text(f"alter table {REFERENCE_TABLE} add primary key (id)"))
        conn.execute(text(f"comment on table {REFERENCE_TABLE} is '{_marker(targets)}'"))


# Every population's snapshot by DOMAIN.md, written apart from the engine: a band's traits
# (links to missing groups and traits without an existing parent left out), the me_file's tags
# on them, children by display order then id, parents by display order then id.
REFERENCE_SQL = """
with band_traits as (
    select distinct g.target_band_id as band_id, t.id as trait_id, t.display_order as tdo,
           p.id as pid, p.trait_name as pname, p.display_order as pdo
    from target_band_trait_groups g
    join trait_groups tg on tg.id = g.trait_group_id
    join trait_group_traits gt on gt.trait_group_id = tg.id
    join traits t on t.id = gt.trait_id
    join traits p on p.id = t.parent_trait_id
), parents as (
    select tp.id, bt.pid, bt.pname, bt.pdo,
           jsonb_agg(jsonb_build_array(mt.trait_id, mt.tag_value, bt.tdo)
                     order by bt.tdo, mt.trait_id, mt.id) as children
    from target_populations tp
    join me_file_tags mt on mt.me_file_id = tp.me_file_id
    join band_traits bt on bt.band_id = tp.target_band_id and bt.trait_id = mt.trait_id
    group by tp.id, bt.pid, bt.pname, bt.pdo
)
select tp.id, jsonb_build_object('tags', coalesce(a.tags, '[]'::jsonb)) as snap
from target_populations tp
left join (
    select p.id, jsonb_agg(jsonb_build_array(p.pid, p.pname, p.pdo, p.children)
                           order by p.pdo, p.pid) as tags
    from parents p group by p.id
) a on a.id = tp.id
where tp.me_file_id is not null
"""


def shape_rows(engine: Engine, targets: int) -> tuple[int, int, int]:
    """Every population back to its starting shape (NULL, broken or good, by its place in its
    band) with updated_at at the mark; (populations, missing, broken)."""
    per_target = BANDS_PER_TARGET * ROWS_PER_BAND
    with engine.begin() as conn:
        conn.execute(
            text(
                f"update target_populations tp set matching_tags_snapshot = x.shaped, "
                f"updated_at = :mark from (select r.id, {SHAPED} as shaped "
                f"from (select id, case when {BUCKETS}[1 + (id - 1) % :rows] = 636 "
                f"and (id - 1) / :per_target % 2 = 1 then 639 "
                f"else {BUCKETS}[1 + (id - 1) % :rows] end as bucket "
                f"from {REFERENCE_TABLE}) r join {REFERENCE_TABLE} s on s.id = r.id) x "
                "where x.id = tp.id"
            ),
            {"mark": UNTOUCHED, "rows": ROWS_PER_BAND, "per_target": per_target},
        )
        col, me = "tp.matching_tags_snapshot", "tp.me_file_id"
        return tuple(
            conn.execute(
                text(
                    f"select count(*), count(*) filter (where {col} is null), "
                    f"count(*) filter (where {broken_sql(col, me)}) from target_populations tp"
                )
            ).one()
        )


def mismatches(engine: Engine) -> int:
    """Populations whose snapshot is not the reference's, up to tie order."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                f"select count(*) from target_populations tp full join {REFERENCE_TABLE} r "
                "on r.id = tp.id where tp.id is null or r.id is null or not ("
                f"{same_sql('tp.matching_tags_snapshot', 'r.snap')})"
            )
        ).scalar_one()


def bench_many_targets(
    server: BenchServer, targets: int, say, keep: bool = False
) -> ManyTargetsFigures:
    name = many_name(targets)
    url = server.create(name)
    engine = make_engine(normalize_url(url), pool_size=4)
    try:
        generator_seconds = 0.0
        if not _ready(engine, targets):
            say(f"many targets: generating the world in {name}")
            started = time.perf_counter()
            generate_many(engine, targets, say)
            generator_seconds = time.perf_counter() - started
        autovacuum(engine, False)
        try:
            populations, missing, broken = shape_rows(engine, targets)
            figures = ManyTargetsFigures(
                targets,
                targets * BANDS_PER_TARGET,
                populations,
                missing,
                broken,
                generator_seconds,
                server=server.label,
                settings=dict(server.settings),
            )
            figures.process_start_seconds = process_start(url)
            figures.commands, figures.left_to_fix = _timed_commands(engine, url, say)
        finally:
            autovacuum(engine, True)
        figures.mismatches = mismatches(engine)
        figures.rows_equal = figures.mismatches == 0
    finally:
        engine.dispose()
        if not keep:
            server.drop(name)
            say(f"many targets: dropped {name} (--keep keeps it for the next bench)")
    return figures


def _timed_commands(engine: Engine, url: str, say) -> tuple[list[CommandFigures], int]:
    """The commands timed, and the rows a last ``backfill --dry-run`` still finds to fix
    (the fixed point: 0)."""
    out = []
    left = 0
    for args, label in (
        (("backfill", "--dry-run"), "qsnap backfill --dry-run"),
        (("backfill", "--yes"), "qsnap backfill --yes"),
        (("backfill", "--dry-run", "--json"), "qsnap backfill --dry-run --json, after"),
        (("targets",), "qsnap targets"),
    ):
        prepare(engine, null_snapshots=False)
        run = run_child(qsnap_command(*args), url, label)
        figures = CommandFigures(label, run.seconds, run.peak_rss_mb)
        if args[1:] == ("--yes",):
            with engine.connect() as conn:
                figures.rows = conn.execute(
                    text("select count(*) from target_populations where updated_at > :mark"),
                    {"mark": UNTOUCHED},
                ).scalar_one()
        if args[1:] == ("--dry-run",):
            took = re.search(r"scan took ([0-9.]+)s", run.output)
            figures.work_seconds = float(took.group(1)) if took else None
        if "--json" in args:
            report = json.loads(run.output)
            totals = report["totals"]
            left = sum(totals[c] for c in report["include"]) + totals.get(OFFERS_LEFT_NULL, 0)
            figures.work_seconds = report["scan_seconds"]
        if args == ("targets",):
            figures.work_seconds = median_seconds(lambda: _cli_targets(engine))
        out.append(figures)
        say(f"many targets: {label} {run.seconds:.2f}s, {run.peak_rss_mb:.0f} MB")
    window = CommandFigures(
        "the window's targets list, with counts",
        median_seconds(lambda: views.list_targets(engine, coverage=True)),
        None,
    )
    return [*out, window], left


def _cli_targets(engine: Engine) -> None:
    """What ``qsnap targets`` reads."""
    with engine.connect() as conn:
        list_targets(conn, orphans=True)
        population_orphans(conn)
