"""Configuration: the environment variables read, checked and turned into one settings
object (settings), with the value parsers (values) and connection strings shown without
their secrets (dsn).

May import the standard library, its own modules and mailroom.addresses; never the
daemon (the per-recipient caps and their parsers are values too: values.Cap, values.Caps).
"""
