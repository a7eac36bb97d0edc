"""Upkeep of the tables Busbar writes fast: planner statistics and dead row versions.

On a table PostgreSQL has never analysed, the planner guesses that a tenant, or a state, holds
0.5% of the rows: a backlog of 20,000 received messages is planned as a handful, and plans made
for a handful walk all of it. Measured on a 100,000-message burst (bench/README.md, e2e_bench):
picking a round's 500 deliveries walked every delivery of the endpoint, and recording 500 events
read every event of the tenant to check their ids were new, so each round cost in proportion to
the backlog and the burst drained ever slower. With statistics the same statements probe keys.

Each state move of a message writes a new version of its row (and, its state being indexed, a
new entry in every index), so a message leaves four dead versions behind on its way through.
Until VACUUM removes them, each probe of a message's key walks past its dead entries, and each
claim past those of the messages claimed before it: in the same burst, vacuuming every 15 s cut
PostgreSQL's time for the state moves by 40% and for the claims by 40%.

Autovacuum does both once a tenth (analysis) or a fifth (vacuum) of a table has changed, checking
once a minute, and only where it is on (a server may run with it off). A burst fills a fresh
monthly partition faster than that. So beat runs ``keep_tables`` every few seconds: as the owner
(only a table's owner may), it vacuums each table of Busbar's schema, partitions one by one,
whose dead row versions exceed ``BUSBAR_UPKEEP_MIN_CHANGES`` and a tenth of its rows, and
analyses each whose rows changed by as much since its last analysis. Neither blocks a reader or
a writer; a table another maintenance command holds (autovacuum's own) is left for the next run.
(The store's state moves do not rely on any of it for their plans: they find their rows by key
whatever the statistics say, see ``services.transition``.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import OperationalError, connections
from psycopg import sql

logger = logging.getLogger(__name__)

OWNER = "owner"
# Of a table's rows: the dead versions, or the changes since its last analysis, that call for
# upkeep (beside BUSBAR_UPKEEP_MIN_CHANGES).
FRACTION = 0.1

# Leaf tables only (ordinary tables and partitions; a partitioned parent keeps no rows of its
# own, and the plans of the store's statements are made on the partition they are pruned to).
DUE_TABLES_SQL = """
SELECT s.relname,
       s.n_dead_tup >= greatest(%(min_changes)s, %(fraction)s * greatest(c.reltuples, 0)),
       s.n_mod_since_analyze >= greatest(%(min_changes)s, %(fraction)s * greatest(c.reltuples, 0))
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND c.relkind = 'r'
  AND greatest(s.n_dead_tup, s.n_mod_since_analyze)
      >= greatest(%(min_changes)s, %(fraction)s * greatest(c.reltuples, 0))
ORDER BY greatest(s.n_dead_tup, s.n_mod_since_analyze) DESC
LIMIT %(limit)s
"""


@dataclass
class UpkeepReport:
    vacuumed: list[str] = field(default_factory=list)
    analysed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # busy with other maintenance


def keep_tables(*, limit: int = 20) -> UpkeepReport:
    """Vacuum and analyse the tables whose upkeep fell behind their rows (see the module
    docstring); at most ``limit`` tables a run, the most changed first."""
    report = UpkeepReport()
    connection = connections[OWNER]
    # VACUUM cannot run inside a transaction; the owner's connection is in autocommit here.
    with connection.cursor() as cursor:
        cursor.execute(
            DUE_TABLES_SQL,
            {
                "min_changes": settings.BUSBAR_UPKEEP_MIN_CHANGES,
                "fraction": FRACTION,
                "limit": limit,
            },
        )
        due = cursor.fetchall()
        # Both wait for a table's other maintenance (autovacuum, a partition being made): a busy
        # table is left for the next run rather than holding up this one.
        cursor.execute("SET lock_timeout = '1s'")
        try:
            for name, dead, changed in due:
                table = sql.Identifier(name)
                try:
                    if dead:
                        cursor.execute(sql.SQL("VACUUM {}").format(table))
                        report.vacuumed.append(name)
                    if changed:
                        cursor.execute(sql.SQL("ANALYZE {}").format(table))
                        report.analysed.append(name)
                except OperationalError:
                    report.skipped.append(name)
        finally:
            cursor.execute("RESET lock_timeout")
    if report.vacuumed or report.analysed or report.skipped:
        logger.info(
            "store.upkeep",
            extra={
                "vacuumed": report.vacuumed,
                "analysed": report.analysed,
                "skipped": report.skipped,
            },
        )
    return report
