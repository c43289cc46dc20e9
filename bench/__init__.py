"""mailroom's benchmark harness: ``python -m bench --help``.

Everything runs on this machine as separate processes: an embedded PostgreSQL, the SES v2
stand-in (tests/sesv2_standin.py), the daemon (``python -m mailroom run``) and the peers
(pgqueuer with one boto3 ``send_email`` per job, and a bare psycopg claim/mark-sent loop).
"""
