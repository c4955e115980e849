"""Settings for Stanza Backups; every value a user may change comes from the environment.

Variables are read and checked by the app's parsers (`backups_app.parsers`), so a bad value stops
start-up with one line naming it. The app's own `STANZA_*` settings are not repeated here: the
app reads them from the environment itself (see `conf.SETTINGS`); `check_environment` checks
them now rather than at their first use.
"""

import os

from backups_app import conf
from backups_app.conf import from_env
from backups_app.parsers import (
    choice_parser,
    int_parser,
    parse_bool,
    parse_emails,
    parse_list,
    parse_str,
    parse_time_zone,
)
from stanza_site.config import REPO_DIR, env_dir, local_secret_key

BASE_DIR = REPO_DIR

# Everything the product creates under STANZA_DATA_DIR (the folder itself, the database and its
# -wal/-shm, backups, sidecars, temporary and lock files) is for its owner only. Settings are
# the first thing every entry point loads (manage.py, gunicorn, the tests), before any of it.
os.umask(0o077)

DEBUG = from_env("DJANGO_DEBUG", False, parse_bool)
ALLOWED_HOSTS = from_env("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"], parse_list)
CSRF_TRUSTED_ORIGINS = from_env("DJANGO_CSRF_TRUSTED_ORIGINS", [], parse_list)

# --- Stanza ---------------------------------------------------------------------------------
TIME_ZONE = from_env("STANZA_TIME_ZONE", "UTC", parse_time_zone)
# This project's data folder: its database (so the app's default backups folder is
# $STANZA_DATA_DIR/backups, and its lock files are here), and its secret-key file.
STANZA_DATA_DIR = env_dir("STANZA_DATA_DIR", default=REPO_DIR / "data")
SECRET_KEY = from_env("DJANGO_SECRET_KEY", None, parse_str) or local_secret_key(STANZA_DATA_DIR)
conf.check_environment(TIME_ZONE)
# This project creates its backups folder at start-up, as it always did (the app on its own
# creates its default one, the same $STANZA_DATA_DIR/backups here, when first needed).
env_dir("STANZA_BACKUPS_DIR", default=STANZA_DATA_DIR / "backups")
# The site's uploaded files: backed up with every backup (STANZA_MEDIA_DIR defaults to it).
MEDIA_ROOT = STANZA_DATA_DIR / "media"
STANZA_LOG_FORMAT = from_env("STANZA_LOG_FORMAT", "text", choice_parser("text", "json"))
STANZA_ADMIN_PASSWORD = from_env("STANZA_ADMIN_PASSWORD", "", parse_str)
# Django's own error emails go where the app's alerts go.
ADMINS = [(email, email) for email in from_env("STANZA_ALERT_EMAILS", [], parse_emails)]

# --- Django ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "backups_app.admin_site.StanzaAdminConfig",  # Django's admin, listing the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_apscheduler",
    "backups_app",
    "stanza_site",  # this project's own command (ensureadmin) and nothing else
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any body is read: only a staff upload may reach the disk, and it is bounded.
    "backups_app.upload_gate.UploadGateMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "stanza_site.urls"
WSGI_APPLICATION = "stanza_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # This site's own templates (error pages, the admin index); the app's are in the app.
        "DIRS": [REPO_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STANZA_DATA_DIR / "database.sqlite",
        "OPTIONS": {
            # WAL lets backups and the scheduler read while the site writes; IMMEDIATE
            # transactions plus a busy timeout turn lock contention into short waits, not errors.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The dashboard's css comes from backups_app/static (the app directories finder); this site
# has no static files of its own (add a STATICFILES_DIRS entry when it gets some).
STATIC_ROOT = REPO_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

LOGIN_URL = "admin:login"

# Backup uploads are streamed into the app's own folder (inside the backups folder); nothing
# else of this site takes uploads, and only files up to 1 MB would stay in RAM.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Security (production values; TLS-only ones are switched on by DJANGO_SECURE_TLS) -------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if from_env("DJANGO_SECURE_TLS", False, parse_bool):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 30
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Mail (alerts go to ADMINS) ------------------------------------------------------------
EMAIL_HOST = from_env("EMAIL_HOST", "localhost", parse_str)
EMAIL_PORT = from_env("EMAIL_PORT", 25, int_parser(1))
EMAIL_HOST_USER = from_env("EMAIL_HOST_USER", "", parse_str)
EMAIL_HOST_PASSWORD = from_env("EMAIL_HOST_PASSWORD", "", parse_str)
EMAIL_USE_TLS = from_env("EMAIL_USE_TLS", False, parse_bool)
DEFAULT_FROM_EMAIL = from_env("DEFAULT_FROM_EMAIL", "stanza-backups@localhost", parse_str)
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Logging -------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "stanza_site.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": STANZA_LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "apscheduler": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
