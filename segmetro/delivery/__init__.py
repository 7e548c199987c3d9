"""The sender and the search client: everything that talks to Metronome's usage API.

``_http`` classifies every answer (one place for status rules), ``_retry`` is the one retry
budget (faults spend ``max_retries``, 429s only time), ``_pacing`` decides how fast to send,
``_sender`` batches, paces and bisects, ``_search`` looks events up for ``verify``.
"""

from segmetro.delivery._http import (
    INGEST_PATH,
    RETRY_AFTER_CAP,
    SEARCH_PATH,
    USER_AGENT,
    backoff_delay,
    parse_retry_after,
)
from segmetro.delivery._search import search_events
from segmetro.delivery._sender import (
    DeliveryHooks,
    DeliveryStats,
    Outbound,
    SenderConfig,
    UndeliverableError,
    deliver,
)

__all__ = [
    "INGEST_PATH",
    "RETRY_AFTER_CAP",
    "SEARCH_PATH",
    "USER_AGENT",
    "DeliveryHooks",
    "DeliveryStats",
    "Outbound",
    "SenderConfig",
    "UndeliverableError",
    "backoff_delay",
    "deliver",
    "parse_retry_after",
    "search_events",
]
