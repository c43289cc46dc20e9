"""The operator's verbs (status, find/show, cancel/send-now, dead letters, queues/stats,
suppression list, audit, the schema check) as functions over a connection.

May import daemon, events, transports, client and the top-level foundations; never web,
which calls it. Still to cut: the verbs still print through cli.output (and
suppressions takes cli.args' argument types), so operator imports cli upward.
"""
