"""Configuration: the environment variables read, checked and turned into one settings
object (settings), with the value parsers (values) and connection strings shown without
their secrets (dsn).

May import the standard library, its own modules and mailroom.addresses. Still to cut:
settings imports daemon.caps' cap parsers.
"""
