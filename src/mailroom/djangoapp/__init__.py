"""mailroom's Django app: signals for what became of the project's mail, fired by
``manage.py mailroom_events`` from the changes feed (mailroom.feed).

    INSTALLED_APPS = [..., "mailroom.djangoapp"]

    from mailroom.djangoapp.signals import email_bounced

    @receiver(email_bounced)
    def bounced(sender, message_id, change, **kwargs): ...

It has no models and no migrations: the cursor is stored in mailroom's own table
(mailroom.change_cursors, per login role and consumer name). Imports only the client layer
(mailroom.feed) and Django.
"""
