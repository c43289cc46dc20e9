"""The Django AppConfig of mailroom.djangoapp."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class MailroomConfig(AppConfig):  # type: ignore[misc]  # Django has no type stubs
    name = "mailroom.djangoapp"
    label = "mailroom"
    verbose_name = "mailroom"
