"""Django's `humanize` filters (naturaltime, intcomma, ...) for the app's templates.

`{% load backups_humanize %}` works in a site that does not list `django.contrib.humanize` in
INSTALLED_APPS (the app asks for three lines, not four); the library is Django's own. (Under the
name `humanize` it would clash with Django's where a site does list it: templates.W003.)
"""

from django.contrib.humanize.templatetags.humanize import register  # noqa: F401
