"""Streams to and from the offsite store: the multipart upload every backup goes up in, the
abort of uploads a cut run left unfinished, and the wrappers that hash what passes through.

Imports: offsite.store only.
"""

import hashlib
import logging
import threading

from backups_app.offsite import lock
from backups_app.offsite import store as offsite_store
from backups_app.offsite.store import OffsiteError, confirm, store_errors

logger = logging.getLogger(__name__)


# --- multipart uploads ----------------------------------------------------------------------


class MultipartUpload:
    """A writable sink that uploads what is written to it as one S3 object, in parts.

    At most PARTS_IN_FLIGHT parts are in memory and on the wire at once (write() waits for
    the oldest to finish), and each part is sent with ChecksumAlgorithm=SHA256: the store
    hashes what it received and answers with the digest, which must be ours, or the upload
    fails. Plain threads rather than an executor: a copy started after a backup may still
    be running while the interpreter shuts down, when executors refuse new work.
    """

    def __init__(self, store, name):
        self.client, self.bucket, self.key = store.client, store.bucket, store.key(name)
        self.completing = store.completing or store.client
        self.store, self.name, self.lock = store, name, lock.put_args()
        self.upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="SHA256", **self.lock
        )["UploadId"]
        self.chunks, self.buffered = [], 0
        self.pending, self.parts, self.size, self.numbers = [], [], 0, 0

    def write(self, data):
        # Parts are at least PART_SIZE (S3 allows parts of different sizes), so what was
        # written is joined once per part and never sliced: one copy of each byte at most.
        self.chunks.append(bytes(data))
        self.buffered += len(data)
        if self.buffered >= offsite_store.PART_SIZE:
            self._send(self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks))
            self.chunks, self.buffered = [], 0
        return len(data)

    def flush(self):
        pass

    def _send(self, data):
        while len(self.pending) >= offsite_store.PARTS_IN_FLIGHT:
            self._wait_oldest()
        self.numbers += 1
        self.size += len(data)
        part = {"number": self.numbers, "data": data}
        thread = threading.Thread(target=self._upload_part, args=(part,), daemon=True)
        thread.start()
        self.pending.append((thread, part))

    def _wait_oldest(self):
        thread, part = self.pending.pop(0)
        thread.join()
        if "error" in part:
            raise part["error"]
        self.parts.append(part["done"])

    def _upload_part(self, part):
        try:
            data, number = part.pop("data"), part["number"]
            digest = hashlib.sha256(data).digest()
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="SHA256",
            )
            del data
            confirm(response, digest, f"part {number} of {self.key}")
            part["done"] = {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumSHA256": response["ChecksumSHA256"],
            }
        except Exception as err:  # raised in the writing thread by _wait_oldest
            part["error"] = err

    def complete(self):
        if self.chunks or not self.numbers:
            self._send(b"".join(self.chunks))
            self.chunks, self.buffered = [], 0
        while self.pending:
            self._wait_oldest()
        self.completing.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])},
        )
        head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        if head["ContentLength"] != self.size:
            raise OffsiteError(
                f"the offsite store holds {head['ContentLength']} bytes of {self.key}, "
                f"not {self.size}"
            )
        lock.lock_written(self.store, self.name, head, self.lock)

    def abort(self):
        """Give the parts back; when the store cannot be told now, the next run aborts it."""
        for thread, _part in self.pending:
            thread.join()
        self.pending = []
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        except Exception as err:  # the store may be the reason we are aborting
            logger.warning(
                "could not abort the upload of %s (the next copy-offsite run will): %s",
                self.key,
                err,
            )


def abort_stale_uploads(store, started_before, is_ours):
    """Abort the multipart uploads under the prefix begun before `started_before` whose object
    name `is_ours` (a run that was cut left them: a store keeps, and bills, their parts);
    return how many."""
    if store.client is None:
        return 0
    prefix = f"{store.prefix}/" if store.prefix else ""
    aborted = 0
    with store_errors(store, "list unfinished uploads"):
        pages = store.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=store.bucket, Prefix=prefix
        )
        stale = [
            upload
            for page in pages
            for upload in page.get("Uploads", ())
            if upload["Initiated"] < started_before and is_ours(upload["Key"][len(prefix) :])
        ]
    for upload in stale:
        with store_errors(store, f"abort the unfinished upload of {upload['Key']}"):
            store.client.abort_multipart_upload(
                Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        aborted += 1
    return aborted


# --- hashing streams ----------------------------------------------------------------------------


class HashingReader:
    """A file wrapper that hashes what is read through it."""

    def __init__(self, f):
        self.f, self.digest = f, hashlib.sha256()

    def read(self, size=-1):
        data = self.f.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self):
        return self.digest.hexdigest()


class HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, f):
        self.f, self.digest, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def hexdigest(self):
        return self.digest.hexdigest()
