"""A view that creates a user and sends a welcome mail in the request's transaction."""

from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives
from django.http import HttpRequest, HttpResponse


def signup(request: HttpRequest) -> HttpResponse:
    login = request.POST["login"]
    user = User.objects.create_user(login, f"{login}@example.com")
    mail = EmailMultiAlternatives(
        "Welcome, Ännchen",
        f"Hello {login}",
        to=[f"Ann Smith <{user.email}>"],
        reply_to=["Help <help@example.com>"],
    )
    mail.attach_alternative(f"<p>Hello {login}</p>", "text/html")
    mail.mailroom = {"idempotency_key": f"welcome:{user.pk}", "priority": 5}
    mail.send()
    if request.POST.get("fail"):
        raise RuntimeError("the request fails after the mail was sent")
    return HttpResponse(str(user.pk))
