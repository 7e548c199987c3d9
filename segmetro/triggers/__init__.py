"""Segment destination-subscription triggers, parsed and evaluated exactly as Segment does.

Segment's actions runtime parses a trigger with ``parseFql`` (``@segment/destination-
subscriptions``, lexer ``@segment/fql-ts``) and tests every event with ``validate``. Both are
small and quirky: unknown tokens are skipped, mixed ``and``/``or`` use the last connective,
comparisons are strictly typed, single quotes stay part of the value. A replay must send exactly
what the live destination would have sent, so this package reproduces those quirks on purpose
instead of "fixing" them.

It owns the trigger language and nothing else; values are seen through the shared JavaScript
value model (:mod:`segmetro.jsvalue`), and the mapping language receives compiled triggers.
The stages, each a module, import only downwards:

* :mod:`~segmetro.triggers.lexer`: fql-ts's tokens, with positions;
* :mod:`~segmetro.triggers.parser`: parseFql's algorithm, to a tree of conditions, recording
  what it skipped, dropped and joined;
* :mod:`~segmetro.triggers.lint`: :func:`lint_trigger`, the warnings ``validate`` shows;
* :mod:`~segmetro.triggers.evaluate`: :func:`parse_trigger`, a :class:`Trigger` compiled once
  into one generated function.

Differences from Segment, all deliberate: where Segment would silently produce a subscription
that matches nothing (a parse error) or one whose evaluation crashes (an empty group, a path with
no name), :func:`parse_trigger` raises :class:`~segmetro.errors.TriggerError` with the position,
so nobody replays into a void; and :func:`lint_trigger` names every place where Segment's reading
differs from what the text seems to say.
"""

from __future__ import annotations

from segmetro.triggers.evaluate import Trigger, parse_trigger
from segmetro.triggers.lint import TriggerWarning, lint_trigger

__all__ = ["Trigger", "TriggerWarning", "lint_trigger", "parse_trigger"]
