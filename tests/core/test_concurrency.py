"""Many threads on pooled connections, alternating tenants: no row ever crosses tenants."""

from __future__ import annotations

import random
import threading

from django.db import connections

from core.tenancy import tenant_context
from tenants.models import DipIdentity

THREADS = 8
OPERATIONS_PER_THREAD = 300


def test_no_row_crosses_tenants_under_concurrency(committed_db):
    from tests.conftest import build_world

    world = build_world()
    tenants = {world.acme.id: "ACME", world.globex.id: "GLBX"}
    problems: list[str] = []
    counts = {"reads": 0, "writes": 0}
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(OPERATIONS_PER_THREAD):
                tenant_id = rng.choice(list(tenants))
                with tenant_context(tenant_id):
                    if i % 10 == 0:
                        DipIdentity.objects.create(
                            mpid=tenants[tenant_id],
                            role_code=f"T{seed:02d}{i // 10:02d}"[:5],
                            dip_id=f"{seed:02d}{i:08d}",
                        )
                        kind = "writes"
                    else:
                        kind = "reads"
                    seen = set(DipIdentity.objects.values_list("tenant_id", flat=True))
                    mpids = set(DipIdentity.objects.values_list("mpid", flat=True))
                    if seen - {tenant_id} or mpids - {tenants[tenant_id]}:
                        problems.append(f"thread {seed} as {tenant_id} saw {seen} {mpids}")
                with lock:
                    counts[kind] += 1
                # Hand the connection back to the pool so the next operation may get another.
                connections["default"].close()
        except Exception as exc:
            problems.append(f"thread {seed}: {exc!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert problems == []
    assert counts["reads"] + counts["writes"] == THREADS * OPERATIONS_PER_THREAD
    for tenant_id, mpid in tenants.items():
        with tenant_context(tenant_id):
            assert set(DipIdentity.objects.values_list("mpid", flat=True)) == {mpid}
    with tenant_context(world.acme.id):
        acme_rows = DipIdentity.objects.count()
    with tenant_context(world.globex.id):
        globex_rows = DipIdentity.objects.count()
    assert acme_rows + globex_rows == 2 + counts["writes"]
