"""Django management commands of mailroom.djangoapp."""
