"""Continuous replication of the live database with Litestream: the package's public names.

The work is done in `config` (settings, state files, the `litestream` binary), `positions`
(where the live database and the replica stand), `run` (the `replicate` command), `status`
(what pages, health and jobs read) and `pitr` (restores from the replica). Callers import
this module; health finds `health_problems` here.
"""

from backups_app.replication.config import (  # noqa: F401
    HISTORY_NAME,
    STATE_DIRNAME,
    STATUS_NAME,
    ReplicationError,
    child_env,
    config_text,
    enabled,
    format_time,
    litestream_binary,
    parse_time,
    read_json,
    state_dir,
    write_config,
)
from backups_app.replication.pitr import restore_at, verify_replica  # noqa: F401
from backups_app.replication.run import only_replicator, replicate, start_litestream  # noqa: F401
from backups_app.replication.status import (  # noqa: F401
    STALE_AFTER,
    Status,
    health_problems,
    note_restore,
    problems,
    status,
    write_status,
)
