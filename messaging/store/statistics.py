"""Fresh planner statistics for the tables Busbar writes fast.

On a table PostgreSQL has never analysed, the planner guesses that a tenant, or a state, holds
0.5% of the rows: a backlog of 20,000 received messages is planned as a handful, and plans made
for a handful walk all of it. Measured on a 100,000-message burst (bench/README.md, e2e_bench):
picking a round's 500 deliveries walked every delivery of the endpoint, and recording 500 events
read every event of the tenant to check their ids were new, so each round cost in proportion to
the backlog and the burst drained ever slower. With statistics the same statements probe keys.

Autovacuum analyses a table once a tenth of it has changed, checking once a minute, and only
where it is on (a server may run with it off). A burst fills a fresh monthly partition faster
than that. So beat runs ``keep_statistics`` every few seconds: as the owner (only a table's owner
may analyse it), it analyses each table of Busbar's schema, partitions one by one, whose rows
changed by more than ``BUSBAR_STATISTICS_MIN_CHANGES`` and a tenth of its size since its last
analysis. ANALYZE reads a fixed sample (30,000 rows at the default target) and blocks no reader or
writer. (The store's state moves do not rely on it: they find their rows by key whatever the
statistics say, see ``services.transition``.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError, connections
from psycopg import sql

logger = logging.getLogger(__name__)

OWNER = "owner"

# Leaf tables only (ordinary tables and partitions; a partitioned parent keeps no rows of its
# own, and the plans of the store's statements are made on the partition they are pruned to).
STALE_TABLES_SQL = """
SELECT s.relname, s.n_mod_since_analyze
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND c.relkind = 'r'
  AND s.n_mod_since_analyze >= greatest(%(min_changes)s, %(fraction)s * greatest(c.reltuples, 0))
ORDER BY s.n_mod_since_analyze DESC
LIMIT %(limit)s
"""


@dataclass
class StatisticsReport:
    analysed: list[str]
    skipped: list[str]  # busy with another maintenance command (autovacuum's own, say)


def keep_statistics(*, limit: int = 20) -> StatisticsReport:
    """Analyse the tables whose statistics fell behind their rows (see the module docstring);
    at most ``limit`` a run, the most changed first."""
    report = StatisticsReport(analysed=[], skipped=[])
    connection = connections[OWNER]
    with connection.cursor() as cursor:
        cursor.execute(
            STALE_TABLES_SQL,
            {
                "min_changes": settings.BUSBAR_STATISTICS_MIN_CHANGES,
                "fraction": 0.1,
                "limit": limit,
            },
        )
        stale = [name for name, _ in cursor.fetchall()]
        # ANALYZE waits for a table's other maintenance (autovacuum, a partition being made);
        # a table that is busy is left for the next run rather than holding up this one.
        cursor.execute("SET lock_timeout = '1s'")
        try:
            for name in stale:
                try:
                    cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
                except OperationalError:
                    report.skipped.append(name)
                else:
                    report.analysed.append(name)
        finally:
            cursor.execute("RESET lock_timeout")
    if report.analysed or report.skipped:
        logger.info(
            "store.statistics",
            extra={"analysed": report.analysed, "skipped": report.skipped},
        )
    return report
