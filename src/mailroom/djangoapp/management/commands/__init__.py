"""manage.py mailroom_events."""
