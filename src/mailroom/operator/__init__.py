"""The operator's verbs (status, find/show, cancel/send-now, dead letters, queues/stats,
suppression list, audit, the schema check) as functions over a connection, and what
they share at a terminal (output: reveal, confirmation, progress).

May import daemon, events, transports, client and the top-level foundations (the
operator's words from text); never web or cli, which call it.
"""
