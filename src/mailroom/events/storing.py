"""What the events reader writes and how it reads a failed write (pure, no I/O): the
events_ingest query's parameters, whether a failure is the database's outage or its
refusal of the content, and the events counter's labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from mailroom.config.settings import Config
from mailroom.events.parsing import Event, suppression_reason

# SQLSTATE classes saying the database is unavailable, not that it refuses the content:
# connection (08), resources (53), operator intervention (57: shutdown, statement
# timeout), transaction rollback (40: serialization, deadlock), and syntax or access rule
# (42: a revoked grant, a schema the daemon does not match - the statements are static and
# their values are parameters, so no event's content can cause one). The messages wait in
# SQS: deleting them would lose every event while a grant is missing.
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "40", "42"})


# Labels for the events counter: bounce, complaint and delay kinds are small enumerations;
# anything else (a rendering failure's template name) is not a label.
_SUBTYPE_LABELED = frozenset({"Bounce", "Complaint", "DeliveryDelay"})


def ingest_params(events: Sequence[Event], config: Config) -> dict[str, Any]:
    """The events_ingest query's parameters: one array per column."""
    return {
        "keys": [e.key for e in events],
        "legacy_keys": [e.legacy_key for e in events],
        "provider_ids": [e.provider_message_id for e in events],
        "recipients": [e.recipient for e in events],
        "types": [e.type for e in events],
        "subtypes": [e.subtype for e in events],
        "details": [e.detail for e in events],
        "occurred": [e.occurred_at for e in events],
        "suppress": [suppression_reason(e) for e in events],
        "unknown": config.events_unknown,
        "transient_count": config.suppress_transient_count,
        "transient_window": config.suppress_transient_window,
        # events_lock: the addresses whose transient-bounce count this batch changes
        "lock_addresses": sorted(
            {e.recipient for e in events if e.type == "Bounce" and e.bounce_type != "Permanent"}
        ),
    }


def is_outage(exc: BaseException) -> bool:
    """Whether a failed store is the database's unavailability (keep the messages, back
    off) rather than its refusal of their content (the message is malformed)."""
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False  # e.g. UnicodeEncodeError: the content
    state = exc.sqlstate
    if state is None:  # raised by the client: a lost connection, a pool timeout
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _OUTAGE_CLASSES


def refusal(exc: Exception) -> str:
    """Why the database refused a message, without the message: psycopg's text may quote
    the values (a duplicate key's DETAIL)."""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    code = f" {state}" if state else ""
    return f"the database refused its content ({type(exc).__name__}{code})"


def label(event: Event) -> str:
    """The subtype label of the events counter (empty when it is not an enumeration)."""
    return event.subtype[:60] if event.type in _SUBTYPE_LABELED else ""
