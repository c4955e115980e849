"""This site's settings with a PostgreSQL database, for the `postgres` tests' subprocesses.

`tests.pgcluster.Cluster.env` sets the variables read here; the password arrives in the
environment of this (test) process only, as a site's settings would read it.
"""

import os

from stanza_site.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["TEST_PG_NAME"],
        "USER": os.environ["TEST_PG_USER"],
        "PASSWORD": os.environ["TEST_PG_PASSWORD"],
        "HOST": os.environ["TEST_PG_HOST"],
        "PORT": os.environ["TEST_PG_PORT"],
    }
}
