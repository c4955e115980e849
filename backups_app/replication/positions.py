"""How far replication has come, measured at both ends: the live database and the replica.

Nothing here takes Litestream's word for it. The live end is SQLite's own WAL index (the
`-shm` file): the WAL generation (its salts) and the offset just past the last committed
frame. The far end is a listing of the replica's LTX files, of which only an unbroken chain
from a snapshot counts: files a restore could not reach (a deleted snapshot, a gap) hold
nothing. Litestream's local LTX files only translate between the two: each header says which
stretch of which WAL generation that transaction id holds.

So a stopped, hung or dead Litestream, or one that cannot reach the replica, shows as lag as
soon as the site commits, and a replica whose files were removed shows at its next listing.
The same local files tell a hung Litestream (its files stop while the site commits on: it
read nothing) from one that cannot reach the replica (it reads on): `Tracker.unread_for`.
"""

import json
import os
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backups_app.core.files import open_regular
from backups_app.replication.config import (
    COMMAND_TIMEOUT,
    ReplicationError,
    parse_time,
    run_litestream,
)

WAL_HEADER, FRAME_HEADER = 32, 24
SHM_HEADER = 48  # one copy of SQLite's WAL-index header; the -shm file starts with two
LTX_HEADER = 100
HEARTBEAT = 5.0  # seconds between two looks by `replicate`
IDLE_LISTING = 30.0  # seconds between two listings of a remote replica while nothing changes
BEAT_TIMEOUT = 20  # a listing gives up on a store that does not answer; the lag then grows
STARTUP_GRACE = 30.0  # seconds Litestream gets to write the first snapshot before "empty" counts
MAX_SAMPLES = 20000  # a day of distinct positions, while nothing reaches the replica
STAMP_MARGIN = 2.0  # an LTX stamped this long after a sample was read from a later WAL


@dataclass(frozen=True)
class LivePosition:
    salts: tuple  # the WAL generation
    end: int  # WAL offset just past the last committed frame


def live_position(database):
    """The live database's last committed transaction, from SQLite's WAL index; None when the
    WAL holds no committed frame (everything is in the database file) or there is no index."""
    path = Path(f"{database}-shm")
    for _ in range(5):  # a writer updating the header: its two copies differ for an instant
        try:
            with open_regular(path) as f:
                raw = f.read(2 * SHM_HEADER)
        except OSError:
            return None
        if len(raw) == 2 * SHM_HEADER and raw[:SHM_HEADER] == raw[SHM_HEADER:]:
            break
    else:
        return None
    is_init, page, frames = raw[12], *struct.unpack_from("=HI", raw, 14)
    if not is_init or not frames:
        return None
    page_size = 65536 if page == 1 else page
    salts = struct.unpack_from(">II", raw, 32)  # copied from the WAL header as they are
    return LivePosition(salts, WAL_HEADER + frames * (FRAME_HEADER + page_size))


@dataclass(frozen=True)
class LocalLtx:
    """What one of Litestream's local LTX files holds: up to `end` of WAL generation `salts`."""

    max_txid: int
    stamp: float  # seconds; Litestream stamps a file after reading the WAL
    salts: tuple
    end: int


def read_ltx_header(path):
    try:
        with open_regular(path) as f:
            raw = f.read(LTX_HEADER)
    except OSError:
        return None
    if len(raw) < 80 or raw[:4] != b"LTX1":
        return None
    max_txid, stamp = struct.unpack_from(">Qq", raw, 24)
    offset, size, salt1, salt2 = struct.unpack_from(">qqII", raw, 48)
    return LocalLtx(max_txid, stamp / 1000, (salt1, salt2), offset + size)


@dataclass(frozen=True)
class LtxFile:
    """One file of the replica, from `litestream ltx`."""

    level: int
    min_txid: int
    max_txid: int
    created: datetime


def replica_files(config, database, level="all", stop=None, timeout=COMMAND_TIMEOUT):
    """The LTX files the replica holds (`litestream ltx -json`)."""
    output = run_litestream(
        "ltx", "-json", "-level", str(level), str(database), config=config, stop=stop,
        timeout=timeout,
    )  # fmt: skip
    try:
        return [
            LtxFile(
                level=int(row["level"]),
                min_txid=int(row["min_txid"], 16),
                max_txid=int(row["max_txid"], 16),
                created=parse_time(row["timestamp"]),
            )
            for row in json.loads(output or "[]")
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise ReplicationError(f"litestream ltx answered something unexpected: {err}") from err


def restorable_txid(files):
    """The newest transaction a restore can reach: the end of the unbroken chain of files
    that starts at a snapshot (a file from transaction 1). 0 when there is none."""
    reached = 0
    for f in sorted(files, key=lambda f: (f.min_txid, -f.max_txid)):
        if f.min_txid > reached + 1:
            break
        reached = max(reached, f.max_txid)
    return reached


def files_span(files):
    """(oldest, newest) creation time of the replica's LTX files, or None when it has none."""
    if not files:
        return None
    times = [f.created for f in files]
    return min(times), max(times)


class Tracker:
    """What `replicate` learns each heartbeat: where the live database is, what the replica
    can restore, and up to when it holds every commit ("synced through")."""

    def __init__(self, database, config, *, remote=False, stop=None):
        self.database = Path(database)
        self.config = config
        self.stop = stop
        self.listing_every = IDLE_LISTING if remote else 0.0
        self.started = time.time()
        self.samples = []  # [(time, LivePosition | None)]: what was committed by that time
        self.position = None
        self.local = {}  # {max txid: LocalLtx} of Litestream's local files
        self.synced_through = None  # every commit before it is in the replica
        self.restorable_txid = 0
        self.newest_txid = 0
        self.replica_problem = ""
        self.suspect = ""  # seen once: a second listing in a row confirms it
        self.ever_restorable = False
        self.files_span = None
        self.listed_at = 0.0
        self.error = ""
        self.unread = (
            None  # (time, LivePosition): the oldest commit seen that Litestream has not read
        )

    def beat(self, now=None):
        now = now if now is not None else time.time()
        self.position = live_position(self.database) or self.position
        if self.samples and self.samples[-1][1] == self.position:
            self.samples[-1] = (now, self.position)  # no commit since: the same state, later
        else:
            self.samples = [*self.samples[-MAX_SAMPLES:], (now, self.position)]
        self._read_local()
        self._note_unread(now)
        pending = any(not self._covered(t, p) for t, p in self.samples)
        if pending or now - self.listed_at >= self.listing_every:
            self._list(now)
        covered = [t for t, p in self.samples if self._covered(t, p)]
        if covered and self.restorable_txid:
            self.synced_through = max(self.synced_through or 0, max(covered))
        # Keep the samples not yet covered, and the newest covered one.
        self.samples = [(t, p) for t, p in self.samples if t >= (self.synced_through or 0)]
        return self.synced_through

    def _read_local(self):
        folder = self.database.parent / f".{self.database.name}-litestream" / "ltx" / "0"
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            return
        for name in names:
            txid = max_txid_of(name)
            if txid and txid not in self.local:
                header = read_ltx_header(folder / name)
                if header is not None:
                    self.local[txid] = header
        if len(self.local) > 4096:  # only the newest are ever needed
            for txid in sorted(self.local)[:-2048]:
                del self.local[txid]

    def _note_unread(self, now):
        """Keep the oldest commit a beat saw that Litestream has still not read. Litestream reads
        the WAL in order: once that one is read, so is every earlier one."""
        if self.unread is not None and self._read_by_litestream(self.unread[1]):
            self.unread = None
        if self.unread is None and not self._read_by_litestream(self.position):
            self.unread = (now, self.position)

    def unread_for(self, now=None):
        """Seconds since a beat saw a commit Litestream has still not read (0: none): a stopped
        or hung Litestream reads nothing while the site commits on. One that cannot reach the
        replica reads on (its lag shows in `synced_through`)."""
        if self.unread is None:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - self.unread[0])

    def litestream_restarted(self):
        """A new Litestream gets its own time to read what the last one left unread."""
        self.unread = None

    def _read_by_litestream(self, position):
        """Whether Litestream's local files hold the live database up to `position`."""
        if position is None:  # no frame in the WAL: nothing to read
            return True
        same = [ltx for ltx in self.local.values() if ltx.salts == position.salts]
        if any(ltx.end >= position.end for ltx in same):
            return True
        if not same:
            return False
        # Read from a later WAL, which begins only once this one was read through.
        last = max(ltx.max_txid for ltx in same)
        return any(
            ltx.salts != position.salts and ltx.max_txid > last for ltx in self.local.values()
        )

    def _list(self, now):
        self.listed_at = now
        try:
            files = replica_files(self.config, self.database, "all", self.stop, BEAT_TIMEOUT)
        except ReplicationError as err:
            self.error = str(err)
            return
        self.error = ""
        reached = restorable_txid(files)
        if reached < self.restorable_txid:  # files went away: what was synced is not held
            self.synced_through = None
        self.restorable_txid = reached
        self.newest_txid = max((f.max_txid for f in files), default=0)
        self.files_span = files_span(files)
        self.ever_restorable = self.ever_restorable or bool(reached)
        problem = ""
        if not files:
            problem = "empty"
        elif reached < self.newest_txid:
            problem = "missing files"
        if problem and not self.ever_restorable and now - self.started < STARTUP_GRACE:
            problem = ""  # Litestream is still writing its first snapshot
        # A listing made while Litestream compacts may catch a file between two levels: a
        # problem counts when the next listing shows it too.
        self.replica_problem = problem if problem and problem == self.suspect else ""
        self.suspect = problem
        if self.replica_problem:
            self.synced_through = None

    def _covered(self, when, position):
        """Whether the replica holds every commit made before `when` (live at `position`)."""
        held = [ltx for txid, ltx in self.local.items() if txid <= self.restorable_txid]
        if not self.restorable_txid:
            return False
        if position is None:  # no frame in the WAL: the database file holds everything
            return True
        if any(ltx.salts == position.salts and ltx.end >= position.end for ltx in held):
            return True
        same = [txid for txid, ltx in self.local.items() if ltx.salts == position.salts]
        if same:  # read from a later WAL, which begins only once this one was read through
            return any(ltx.salts != position.salts and ltx.max_txid > max(same) for ltx in held)
        return any(ltx.stamp >= when + STAMP_MARGIN for ltx in held)

    def synced_iso(self):
        synced = self.synced_through
        return datetime.fromtimestamp(synced, UTC).isoformat() if synced else None


def max_txid_of(filename):
    """MAX from an LTX file name `MIN-MAX.ltx` (hex), 0 when it is not one."""
    stem, _, ext = filename.partition(".")
    low, _, high = stem.partition("-")
    if ext != "ltx" or not high:
        return 0
    try:
        return int(high, 16)
    except ValueError:
        return 0
