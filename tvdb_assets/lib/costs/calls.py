"""The context of a billable call: its run, its documents, its correlation id."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class CallContext:
    """Who a billable call is made for: written on its ledger row and its log lines."""

    run_id: str | None = None
    partition_keys: Sequence[str] = ()
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def child(self, partition_keys: Sequence[str] | None = None) -> "CallContext":
        """A context for one call within this one: same run, its own correlation id."""
        keys = self.partition_keys if partition_keys is None else partition_keys
        return CallContext(self.run_id, keys, f"{self.correlation_id}.{uuid.uuid4().hex[:6]}")
