"""Django's `humanize` filters under their usual name, for the app's `{% load humanize %}`.

So the app's pages work in a site that does not list `django.contrib.humanize` in
INSTALLED_APPS (one more line to add); where it does, both names hold the same library.
"""

from django.contrib.humanize.templatetags.humanize import register  # noqa: F401
