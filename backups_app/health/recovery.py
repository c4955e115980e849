"""Recovery point and recovery time: the two numbers that matter after a disaster.

Recovery point: how much data losing the disk would cost now, the age of the freshest place the
data can come back from: the newest backup the site made, the newest of those confirmed
offsite, the replica. Recovery time: how long the last drill that passed took to read, restore
and check its backup, with that backup's size.

Read from what was recorded (the backups listing, the drill's record, the offsite jobs' record
of the store, the `replicate` command's status file): never the network. For the Backups page
(which formats it), `checkbackups` (`sentences()`) and /metrics.
"""

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from backups_app.core.errors import BackupError
from backups_app.engine import backups
from backups_app.health import health
from backups_app.models import DrillRun
from backups_app.offsite import copies as offsite_copies
from backups_app.offsite import state as offsite_state
from backups_app.offsite import store as offsite_store
from backups_app.restore import drill


@dataclass(frozen=True)
class Recovery:
    checked_at: datetime
    backup_at: datetime | None = None  # the newest backup the site made itself
    offsite_on: bool = False
    offsite_at: datetime | None = None  # the newest of those with an offsite copy
    replica_on: bool = False
    replica_at: datetime | None = None  # every commit before it is in the replica
    drill: DrillRun | None = None  # the last drill that passed
    same_disk: bool | None = None  # the backups folder is on the live database's file system

    @property
    def sources(self):
        """[(what, time its data is from, or None)] for each place a restore can come from."""
        found = [("the newest backup", self.backup_at)]
        if self.offsite_on:
            found.append(("the newest offsite copy", self.offsite_at))
        if self.replica_on:
            found.append(("the replica", self.replica_at))
        return found

    @property
    def freshest(self):
        """(what, time) of the source with the newest data, or None when there is none."""
        dated = [(what, at) for what, at in self.sources if at is not None]
        return max(dated, key=lambda source: source[1], default=None)

    @property
    def point_seconds(self):
        """The recovery point: seconds of data a lost disk would cost now; None: all of it."""
        freshest = self.freshest
        return age_seconds(freshest[1], self.checked_at) if freshest else None

    @property
    def time_seconds(self):
        """The recovery time: seconds the last drill that passed took to restore; or None."""
        return self.drill.restore_seconds if self.drill else None

    def sentences(self):
        """The two numbers in plain words, a line each (what `checkbackups` prints)."""
        return [self.point_sentence(), self.time_sentence()]

    def point_sentence(self):
        if self.freshest is None:
            return (
                "Recovery point: none. There is no backup yet: losing the disk now would lose "
                "all the data."
            )
        point = age_words(self.point_seconds)
        sentence = (
            f"Recovery point: {point}. Losing the disk now would lose up to {point} of data "
            f"({'; '.join(self.source_lines)})."
        )
        if self.same_disk:
            sentence += f" {self.same_disk_words}."
        return sentence

    @property
    def only_on_this_disk(self):
        """Whether every copy to restore from is on the database's disk (no offsite, no replica)."""
        return bool(self.same_disk) and not any(
            at for what, at in self.sources if what != "the newest backup"
        )

    @property
    def same_disk_words(self):
        return (
            "The backups folder is on the database's disk: losing that disk loses the backups "
            "too, and only an offsite copy or the replica would be left"
        )

    @property
    def source_lines(self):
        """'the newest backup is 8 hours old', 'the replica is 2 seconds behind', ..."""
        lines = []
        for what, at in self.sources:
            if at is None:
                lines.append(f"{what}: none yet")
                continue
            age = age_words(age_seconds(at, self.checked_at))
            lines.append(f"{what} is {age} {'behind' if what == 'the replica' else 'old'}")
        return lines

    def time_sentence(self):
        if self.drill is None or self.drill.restore_seconds is None:
            return (
                "Recovery time: not measured yet. No restore drill has passed "
                "(job verify-latest-backup measures it every night)."
            )
        made = timezone.localtime(self.drill.finished_at).strftime("%Y-%m-%d %H:%M %Z")
        return (
            f"Recovery time: about {age_words(self.drill.restore_seconds)}. The last restore "
            f"drill ({made}) read, restored and checked a backup of "
            f"{backups.human_size(self.drill.backup_size)} in that time."
        )


def state(now=None, *, listed=None, drills=None, replica=None):
    """The recovery point and time as recorded now.

    What the caller has already read is not read again: `listed` (the backups folder's
    `scan_backups()`), `drills` (the verdict's `drill.recent_drills()`) and `replica` (the
    verdict's `replication.status()`).
    """
    now = now or timezone.now()
    if listed is None:
        try:
            listed = backups.scan_backups(reuse=True)
        except BackupError:
            listed = []
    newest = health.newest_own(listed)
    offsite_on = _offsite_on()
    if replica is None:
        replica = health.replica_status(now)
    replica_on = replica is not None and replica.enabled
    return Recovery(
        checked_at=now,
        backup_at=_time(newest.mtime) if newest else None,
        offsite_on=offsite_on,
        offsite_at=offsite_point() if offsite_on else None,
        replica_on=replica_on,
        replica_at=replica.last_sync if replica_on else None,
        drill=(drills or drill.recent_drills()).passed,
        same_disk=backups_on_database_disk(),
    )


def backups_on_database_disk():
    """Whether the backups folder is on the live database's file system (two stats); None
    when that cannot be told (a PostgreSQL database lives on its server)."""
    try:
        database = backups.live_database_path()
        return os.stat(backups.backups_dir()).st_dev == os.stat(database.parent).st_dev
    except (BackupError, OSError):
        return None


def offsite_point():
    """When the data of the newest offsite copy of a backup the site made itself was captured
    (the time in its name), from what the offsite jobs recorded: no request to the store."""
    stamps = []
    for name in offsite_copies.own_copies(offsite_state.recorded().copies):
        parsed = backups.parse_backup_name(name)
        if parsed is not None:
            stamps.append(datetime.strptime(parsed["stamp"], backups.STAMP_FORMAT))
    return max(stamps).replace(tzinfo=UTC) if stamps else None


def _offsite_on():
    try:
        return offsite_store.enabled()
    except BackupError:  # a bad setting: the health verdict names it
        return False


def _time(mtime):
    return datetime.fromtimestamp(mtime, UTC)


def age_seconds(moment, now):
    return max(0.0, (now - moment).total_seconds())


def age_words(seconds):
    """A length of time in plain words: '1 second', '40 seconds', '3 hours', '2 days'."""
    if seconds is None:
        return "unknown"
    for unit, size, up_to in (
        ("second", 1, 90),
        ("minute", 60, 90 * 60),
        ("hour", 3600, 48 * 3600),
        ("day", 86400, None),
    ):
        if up_to is None or seconds < up_to:
            count = max(1, round(seconds / size))
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return ""
