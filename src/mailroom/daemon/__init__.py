"""The sending daemon, in the order data flows: listener, batcher, the sender and its
plan steps (suppression, caps, token signing, account pauses), retry (what a verdict of
transports.classify does to a message), rate control, retention, presence, preflight and
the daemon's lifecycle (run).

May import mailroom.transports, mailroom.events and the top-level foundations (outbox,
metrics, health, logs, tokens, addresses, text, config); never operator, cli or web.
"""
