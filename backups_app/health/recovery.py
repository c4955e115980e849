"""Recovery point and recovery time: the two numbers that matter after a disaster.

Recovery point: how much data losing the disk would cost now, the age of the freshest place the
data can come back from: the newest backup the site made, the newest of those confirmed
offsite, the replica. Recovery time: how long the last drill that passed took to read, restore
and check its backup, with that backup's size.

Read from what was recorded (the backups listing, the run history, the drill's record, the
`replicate` command's status file): never the network. For the Backups page (which formats
it), `checkbackups` (`sentences()`) and /metrics.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from backups_app.engine import backups
from backups_app.engine.backups import BackupError
from backups_app.health import health
from backups_app.models import CronRun, DrillRun
from backups_app.offsite import store as offsite_store
from backups_app.offsite import upload as offsite_upload
from backups_app.replication import replication
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
        return (
            f"Recovery point: {point}. Losing the disk now would lose up to {point} of data "
            f"({'; '.join(self.source_lines)})."
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


def state(now=None, *, listed=None, copied=None, drills=None):
    """The recovery point and time as recorded now.

    What the caller has already read is not read again: `listed` (the backups folder's
    `scan_backups()`), `copied` (the newest successful copy-offsite run), `drills` (the
    verdict's `drill.recent_drills()`).
    """
    now = now or timezone.now()
    if listed is None:
        try:
            listed = backups.scan_backups(reuse=True)
        except BackupError:
            listed = []
    newest = health.newest_own(listed)
    offsite_on = _offsite_on()
    replica = replication.status(now) if replication.enabled() else None
    return Recovery(
        checked_at=now,
        backup_at=_time(newest.mtime) if newest else None,
        offsite_on=offsite_on,
        offsite_at=offsite_point(listed, copied) if offsite_on else None,
        replica_on=replica is not None,
        replica_at=replica.last_sync if replica is not None else None,
        drill=(drills or drill.recent_drills()).passed,
    )


def offsite_point(listed, copied=None):
    """When the newest backup known to be offsite was made: the newest the site made itself
    before the last successful copy-offsite run started (that run copied every backup the
    folder held). From the run history: no request to the store."""
    if copied is None:
        copied = (
            CronRun.objects.filter(job_name=offsite_upload.JOB_NAME, status=CronRun.Status.SUCCESS)
            .order_by("-started_at", "-id")
            .first()
        )
    if copied is None:
        return None
    started = copied.started_at.timestamp()
    newest = health.newest_own([item for item in listed if item.mtime <= started])
    return _time(newest.mtime) if newest else None


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
