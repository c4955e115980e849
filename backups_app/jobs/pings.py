"""Pings for a cron monitor (Healthchecks.io style): every job run says it started, and how it
ended, to `STANZA_PING_URL` with `{job}` replaced by the job's name.

At the start of a run `GET URL/start?rid=UUID`; at its end `POST URL?rid=UUID` (body: the result
line) or `POST URL/fail?rid=UUID` (body: the last 10 kB of the error); the `rid` is the run's
own, so the monitor pairs the two; a run skipped because the job was still running sends none.
The pings go out from one background thread, in the order the runs made them, each with a
short timeout and one retry. A ping that fails is logged; it never fails or delays the job, the
page or the command that ran it (a process that exits waits a few seconds at most for the pings
still queued).

Connected to `signals.run_started` and `signals.run_finished` in `BackupsAppConfig.ready()`;
imports only conf.
"""

import atexit
import logging
import queue
import threading
import time
import urllib.request
import uuid
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from backups_app import conf

logger = logging.getLogger(__name__)

TIMEOUT = 5  # seconds a ping may take (connect, and each read)
RETRY_AFTER = 1  # seconds before the one retry
ERROR_TAIL = 10_000  # bytes of the error a fail ping carries (its end: the exception)
EXIT_WAIT = 10  # seconds an exiting process waits for the pings still queued
# The rid of a run: the same for its start and end pings, in whichever process sends them.
RID_NAMESPACE = uuid.UUID("6c1f3f6e-2b0a-4c57-9d8e-5b3c1d0a7e21")
SUFFIXES = {"start": "/start", "success": "", "fail": "/fail"}

_queue = queue.Queue()
_lock = threading.Lock()
_worker = None
_exit_hook = False


# --- what a run sends ----------------------------------------------------------------------


def on_run_started(sender=None, run=None, **kwargs):
    """`GET URL/start?rid=...` for a run that starts (see signals.run_started)."""
    ping(run, "start")


def on_run_finished(sender=None, run=None, **kwargs):
    """`POST URL?rid=...` with the result line, or `POST URL/fail?rid=...` with the error's
    end, for a run that ended (see signals.run_finished)."""
    if run.status == "skipped":  # not a run: the one still going pings its own end
        return
    if run.status == "success":
        ping(run, "success", (run.result or "").encode())
    else:
        ping(run, "fail", (run.error or "").encode()[-ERROR_TAIL:])


def ping(run, kind, body=None):
    """Queue one ping of `run` (`kind`: start, success or fail) when STANZA_PING_URL is set."""
    template = conf.get("STANZA_PING_URL")
    if not template:
        return None
    url = ping_url(template, run.job_name, kind, rid_of(run))
    return send(url, "GET" if body is None else "POST", body)


def rid_of(run):
    """The run's rid: a UUID of its id and start time (a reused id starts at another time)."""
    return str(uuid.uuid5(RID_NAMESPACE, f"{run.pk}:{run.started_at.isoformat()}"))


def ping_url(template, job, kind, rid):
    """The URL of one ping: `{job}` filled in, `/start` or `/fail` after the path, the rid (and
    any query the template has, such as Healthchecks' `?create=1`) as its query."""
    parts = urlsplit(template.replace("{job}", quote(job, safe="")))
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("rid", rid)]
    path = parts.path.rstrip("/") + SUFFIXES[kind]
    return urlunsplit(parts._replace(path=path, query=urlencode(query)))


# --- sending, in the background ------------------------------------------------------------


def send(url, method="GET", body=None):
    """Queue a request for the background sender; returns at once."""
    global _worker, _exit_hook
    with _lock:
        if _worker is None or not _worker.is_alive():  # first ping, or a forked process
            _worker = threading.Thread(target=_work, name="stanza-pings", daemon=True)
            _worker.start()
        if not _exit_hook:
            atexit.register(flush, EXIT_WAIT)
            _exit_hook = True
        _queue.put((url, method, body))


def flush(timeout=EXIT_WAIT):
    """Wait until every queued ping was sent (or given up), at most `timeout` seconds; return
    whether the queue is empty."""
    deadline = time.monotonic() + timeout
    with _queue.all_tasks_done:
        while _queue.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _queue.all_tasks_done.wait(remaining)
    return True


def _work():
    while True:
        url, method, body = _queue.get()
        try:
            deliver(url, method, body)
        except Exception:  # never let the sender die: later pings still go out
            logger.exception("ping to %s failed", where(url))
        finally:
            _queue.task_done()


def deliver(url, method, body):
    """Send one request, retrying once; log (never raise) when both tries fail."""
    for attempt in (1, 2):
        try:
            request = urllib.request.Request(
                url, data=body, method=method, headers={"User-Agent": "stanza-backups"}
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                response.read(4096)
            return True
        except Exception as err:  # refused, timed out, an HTTP error status, a bad answer
            error = err
        if attempt == 1:
            time.sleep(RETRY_AFTER)
    logger.warning(
        "ping to %s failed twice: %s",
        where(url),
        error,
        extra={"event": "ping_failed", "url": where(url)},
    )
    return False


def where(url):
    """A ping URL without its path and query, for the log: the path holds the check's key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
