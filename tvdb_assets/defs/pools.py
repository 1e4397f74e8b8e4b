"""Dagster concurrency pools of the steps that call a paid service (in real or hybrid mode):
no more of them run at once, across all runs, than the pool's limit, however many runs the
queue starts. The shared rate limiter and circuit (`lib.services`) pace and stop their
calls; the pools keep runs from piling up behind them.

Each pool gets its limit set explicitly, once per deployment, before any step claims a
slot. Dagster 1.13 would otherwise create a pool's limit from `concurrency.pools.
default_limit` on the first claim, and on Postgres two runs claiming at once then fail
one of them (its duplicate insert aborts the transaction: dagster-io/dagster#33552).
A limit someone has set (`dagster instance concurrency set openai 4`, or the UI) is kept.
"""

import dagster as dg

from tvdb_assets.lib import store
from tvdb_assets.lib.store.connection import lock_named

PARSER_POOL = "llamaparse"
EMBEDDER_POOL = "openai"
# Steps of one pool running at once: two runs' calls keep a service busy between them.
POOL_LIMIT = 2


def ensure_pools(instance: dg.DagsterInstance) -> None:
    """Give our pools their limit where the deployment has none yet."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    if {PARSER_POOL, EMBEDDER_POOL} <= {p.name for p in storage.get_pool_limits()}:
        return
    with store.connect(autocommit=True) as conn, conn.transaction():
        lock_named(conn, "tvdb_assets.pools")  # one process sets them, the others see them
        known = {p.name for p in storage.get_pool_limits()}
        for pool in (PARSER_POOL, EMBEDDER_POOL):
            if pool not in known:
                storage.set_concurrency_slots(pool, POOL_LIMIT)
