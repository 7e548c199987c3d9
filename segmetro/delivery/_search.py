"""``POST /v1/events/search`` for ``verify``: small sequential chunks, gently (design §5).

Metronome calls the search endpoint heavily rate limited and meant for sampling, so chunks go
one at a time with a pause between them; answers are classified by ``_http`` exactly as for
ingest: a 429 waits (bounded by ``max_stall``), faults spend ``max_retries``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from segmetro.delivery._http import (
    SEARCH_PATH,
    Verdict,
    classify_error,
    classify_response,
    headers,
)
from segmetro.delivery._pacing import Sleep
from segmetro.delivery._retry import GiveUp, Retries
from segmetro.delivery._sender import SenderConfig, own_client
from segmetro.errors import AuthenticationError, ConfigError, DeliveryError

__all__ = ["search_events"]


async def search_events(
    transaction_ids: Sequence[str],
    *,
    config: SenderConfig,
    client: httpx.AsyncClient | None = None,
    chunk: int = 25,
    pause: float = 0.2,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """Look events up in small sequential chunks; returns the rows of every chunk, in order.

    Raises ``AuthenticationError`` on 401/403 and ``DeliveryError`` on any other refusal, when
    faults exhaust ``max_retries`` or when 429s last longer than ``max_stall``.
    """
    if chunk < 1:
        raise ConfigError(f"search chunk must be at least 1, got {chunk}")
    url = config.api_url.rstrip("/") + SEARCH_PATH
    rand = rng if rng is not None else random.Random()
    own = client is None
    http = own_client(config) if client is None else client
    rows: list[dict[str, Any]] = []
    try:
        for start in range(0, len(transaction_ids), chunk):
            if start:
                await sleep(pause)
            ids = list(transaction_ids[start : start + chunk])
            body = orjson.dumps({"transactionIds": ids})
            rows.extend(await _search_chunk(http, url, body, config, sleep, rand, clock))
    finally:
        if own:
            await http.aclose()
    return rows


async def _search_chunk(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    config: SenderConfig,
    sleep: Sleep,
    rng: random.Random,
    clock: Callable[[], float],
) -> list[dict[str, Any]]:
    started = clock()
    retries = Retries(config, rng=rng, clock=clock, last_progress=lambda: started)
    while True:
        try:
            response = await http.post(
                url, content=body, headers=headers(config.token), timeout=config.timeout
            )
        except httpx.TransportError as exc:
            answer = classify_error(exc, url)
        else:
            answer = classify_response(response, url)
            if answer.verdict is Verdict.OK:
                return _rows(response, url)
        if answer.verdict is Verdict.AUTH:
            raise AuthenticationError(answer.detail)
        if answer.verdict in (Verdict.REFUSED, Verdict.SPLIT):
            raise DeliveryError(f"event search refused: {answer.detail}")
        try:
            if answer.verdict is Verdict.RATE_LIMITED:
                delay = retries.rate_limited(answer, paced=False)
            else:
                delay = retries.fault(answer)
            retries.check_stall(answer)
        except GiveUp as exc:
            raise DeliveryError(
                f"event search at {url} failed: {exc.detail}; try again later or with a "
                "smaller --sample"
            ) from None
        await sleep(delay)


def _rows(response: httpx.Response, url: str) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise DeliveryError(f"event search at {url} returned invalid JSON") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DeliveryError(f"event search at {url} returned {type(data).__name__}")
    return [row for row in data if isinstance(row, dict)]
