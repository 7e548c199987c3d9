"""The billing preview: which billable metrics and customers an event would meet in Metronome.

Metronome stores an event whose ``event_type``/properties match no billable metric, or whose
``customer_id`` is no customer id or ingest alias, and bills nothing for it without a word. This
package decides that before anything is sent:

* ``account``: the account's billable metrics and customers, from ``GET /v1/billable-metrics``
  and ``GET /v1/customers`` (cursor pages) or from files in those responses' shape;
* ``rules``: Metronome's matching rules (event-type filter, property filters, customer
  resolution by id or ingest alias) and which value an aggregation can use;
* ``usage``: the aggregations (COUNT, SUM, MAX, UNIQUE, LATEST) by customer, day and group key;
* ``preview``: the report of one run: what would bill nothing, by cause, and the usage added;
* ``invoice``: ``--invoice-preview N``, Metronome's draft invoices of the largest customers.

Imports flow ``billing → {models, errors}``; the pipeline feeds it each event a run would send.
"""

from __future__ import annotations

from segmetro.billing.account import (
    Account,
    BillingDataError,
    Customer,
    Metric,
    fetch_account,
    load_customers,
    load_metrics,
    parse_customers,
    parse_metrics,
)
from segmetro.billing.invoice import draft_invoices
from segmetro.billing.preview import BillingPreview
from segmetro.billing.rules import Miss, aggregation_value, filter_text, match_metric
from segmetro.billing.usage import Aggregate

__all__ = [
    "Account",
    "Aggregate",
    "BillingDataError",
    "BillingPreview",
    "Customer",
    "Metric",
    "Miss",
    "aggregation_value",
    "draft_invoices",
    "fetch_account",
    "filter_text",
    "load_customers",
    "load_metrics",
    "match_metric",
    "parse_customers",
    "parse_metrics",
]
