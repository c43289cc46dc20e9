"""SES events: parsing (pure, no I/O), the SNS signature checks (sns, pure) and the
certificate fetching they need (sns_certs), the SQS reader that feeds them to the
database (reader) and what it writes and how it tells an outage from refused content
(storing, pure).

May import the top-level foundations (outbox, metrics, config) and
transports.awsconfig (the region), and mailroom.addresses (normalize_address, the form
suppression compares); never daemon, operator, cli or web.
"""
