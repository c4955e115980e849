"""Formatting for the recovery point and time: a number of seconds in plain words."""

from django import template

from backups_app.health import recovery

register = template.Library()


@register.filter
def age_words(seconds):
    """3600 -> '1 hour' (the words `checkbackups` uses too)."""
    return recovery.age_words(seconds)
