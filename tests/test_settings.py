"""Start-up checks of the environment variables: one clear line naming the variable."""

import pytest

from tests.conftest import manage


@pytest.fixture
def env(tmp_path):
    return {"STANZA_DATA_DIR": str(tmp_path / "data"), "DJANGO_SECRET_KEY": "test"}


@pytest.mark.parametrize(
    "name, value",
    [
        ("STANZA_BACKUP_SCHEDULE", "every night"),
        ("STANZA_BACKUP_SCHEDULE", "0 2 * *"),
        ("STANZA_BACKUP_SCHEDULE", "61 2 * * *"),
        ("STANZA_PURGE_SCHEDULE", "30 25 * * *"),
        ("STANZA_PURGE_SCHEDULE", "* * * * * *"),
        ("STANZA_BACKUP_RETENTION_DAYS", "-1"),
        ("STANZA_BACKUP_RETENTION_DAYS", "seven"),
        ("STANZA_BACKUP_RETENTION_DAYS", "1.5"),
        ("STANZA_TIME_ZONE", "Mars/Olympus_Mons"),
        ("STANZA_TIME_ZONE", "../../etc/passwd"),
        ("STANZA_LOG_FORMAT", "xml"),
        ("STANZA_ALERT_EMAILS", "ops@example.com, not-an-email"),
        ("STANZA_ALERT_EMAILS", "root@localhost"),
        ("DJANGO_DEBUG", "maybe"),
        ("STANZA_UPLOAD_MAX_MB", "0"),
        ("STANZA_OFFSITE_URL", "ftp://host/backups"),
        ("STANZA_OFFSITE_SCHEDULE", "every 15 minutes"),
        ("STANZA_OFFSITE_RETENTION_DAYS", "-3"),
        ("STANZA_OFFSITE_AGE_RECIPIENTS", "ssh-ed25519 AAAA"),
        ("STANZA_REPLICA_URL", "s3://"),
        ("STANZA_REPLICA_MAX_LAG", "soon"),
        ("STANZA_PING_URL", "https://hc-ping.com/KEY"),
        ("STANZA_PING_URL", "hc-ping.com/KEY/{job}"),
    ],
)
def test_it_stops_start_up_with_one_line_naming_the_variable(env, name, value):
    result = manage("check", env={**env, name: value})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


def test_it_refuses_a_data_dir_that_is_a_file(env, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    result = manage("check", env={**env, "STANZA_DATA_DIR": str(a_file)})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "STANZA_DATA_DIR" in line and "is a file" in line


def test_it_refuses_a_backups_dir_that_is_a_file(env, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    result = manage("check", env={**env, "STANZA_BACKUPS_DIR": str(a_file)})

    [line] = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "STANZA_BACKUPS_DIR" in line


def test_it_starts_with_good_values_and_blank_ones(env):
    good = {
        "STANZA_BACKUP_SCHEDULE": "15 3 * * 1-5",
        "STANZA_PURGE_SCHEDULE": "",
        "STANZA_BACKUP_RETENTION_DAYS": "0",
        "STANZA_TIME_ZONE": "Europe/Paris",
        "STANZA_LOG_FORMAT": "JSON",
        "STANZA_ALERT_EMAILS": "a@example.com,b@example.org",
        "DJANGO_DEBUG": "false",
    }

    result = manage("check", env={**env, **good})

    assert result.returncode == 0, result.stderr
