"""The deployment's OpenAI circuit, as an earlier run would have left it (`lib.services`)."""

from tvdb_assets.lib import services


def open_circuit() -> None:
    """An outage seen by an earlier run: five failed calls open the circuit for everyone."""
    breaker = services.breaker("openai", 5, 60.0)
    for _ in range(5):
        breaker.record_failure()
    assert breaker.state == "open"


def close_circuit() -> None:
    """A call went through: the circuit is closed for everyone."""
    services.breaker("openai", 5, 60.0).record_success()
