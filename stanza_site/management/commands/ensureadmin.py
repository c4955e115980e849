import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the admin user on first start (STANZA_ADMIN_PASSWORD or a generated one)."

    def handle(self, *args, **options):
        users = get_user_model().objects
        if users.filter(username=USERNAME).exists():
            self.stdout.write(f"Admin login: {USERNAME} (password as set on first start)")
            return
        password = settings.STANZA_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        users.create_superuser(USERNAME, email="", password=password)
        if settings.STANZA_ADMIN_PASSWORD:
            self.stdout.write(f"Admin login: {USERNAME} / the password in STANZA_ADMIN_PASSWORD")
        else:
            self.stdout.write(f"Admin login: {USERNAME} / {password}  (shown once: note it now)")
