"""SES events: parsing (pure, no I/O), the SNS signature checks (sns, pure) and the
certificate fetching they need (sns_certs), and the SQS reader that feeds them to the
database (reader).

May import the top-level foundations (outbox, metrics, config) and
transports.awsconfig (the region); never daemon, operator, cli or web. Still to cut:
parsing imports daemon.suppression's normalize_address.
"""
