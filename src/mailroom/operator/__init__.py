"""The operator's verbs (status, find/show, cancel/send-now, dead letters, queues/stats,
suppression list, audit, the schema check) as plain functions over a connection that
return data: no printing, no argument parsing, no exit. The command (cli/) and the
console (web/) both call them.

May import daemon, events, transports, client and the top-level foundations (the
operator's words from text); never web or cli, which call it.
"""
