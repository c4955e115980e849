"""Settings for Stanza Backups; every value a user may change comes from the environment."""

import os

from stanza_site.config import (
    REPO_DIR,
    env_bool,
    env_choice,
    env_cron,
    env_dir,
    env_emails,
    env_int,
    env_list,
    env_str,
    env_time_zone,
    local_secret_key,
)

BASE_DIR = REPO_DIR

# Everything the product creates under STANZA_DATA_DIR (the folder itself, the database and its
# -wal/-shm, backups, sidecars, temporary and lock files) is for its owner only. Settings are
# the first thing every entry point loads (manage.py, gunicorn, the tests), before any of it.
os.umask(0o077)

DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- Stanza ---------------------------------------------------------------------------------
TIME_ZONE = env_time_zone("STANZA_TIME_ZONE")
STANZA_DATA_DIR = env_dir("STANZA_DATA_DIR", default=REPO_DIR / "data")
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or local_secret_key(STANZA_DATA_DIR)
STANZA_BACKUPS_DIR = env_dir("STANZA_BACKUPS_DIR", default=STANZA_DATA_DIR / "backups")
STANZA_BACKUP_SCHEDULE = env_cron("STANZA_BACKUP_SCHEDULE", "0 2 * * *", TIME_ZONE)
STANZA_PURGE_SCHEDULE = env_cron("STANZA_PURGE_SCHEDULE", "30 2 * * *", TIME_ZONE)
STANZA_BACKUP_RETENTION_DAYS = env_int("STANZA_BACKUP_RETENTION_DAYS", 7, minimum=0)
STANZA_LOG_FORMAT = env_choice("STANZA_LOG_FORMAT", "text", ("text", "json"))
STANZA_ADMIN_PASSWORD = env_str("STANZA_ADMIN_PASSWORD")
STANZA_ALERT_EMAILS = env_emails("STANZA_ALERT_EMAILS")
ADMINS = [(email, email) for email in STANZA_ALERT_EMAILS]

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

# Uploaded backups (the Backups page's upload form) are streamed to disk beside the data,
# not into /tmp (often a small tmpfs) and not into memory: only files up to 1 MB stay in RAM.
FILE_UPLOAD_TEMP_DIR = STANZA_DATA_DIR / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(exist_ok=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Security (production values; TLS-only ones are switched on by DJANGO_SECURE_TLS) -------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if env_bool("DJANGO_SECURE_TLS", default=False):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 30
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Mail (alerts go to ADMINS) ------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "stanza-backups@localhost")
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
