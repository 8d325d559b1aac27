"""Files in the GridFS layout (`fs.files` + `fs.chunks`), keyed by their sha256.

Written with plain collection calls rather than `gridfs.GridFS`, which refuses
non-pymongo databases unless its classes are patched process-wide. The layout is
GridFS's own, so `gridfs.GridFSBucket(db).open_download_stream(sha)` reads these
files on a real MongoDB. Keying by content makes every write idempotent and
deduplicates sources shared by many runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

CHUNK_BYTES = 255 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_files(db, files: dict[str, bytes]) -> int:
    """Store every file not stored yet; returns how many were new. Chunks go first,
    so a `fs.files` document always names a complete file."""
    if not files:
        return 0
    present = {doc["_id"] for doc in db["fs.files"].find({"_id": {"$in": list(files)}}, {"_id": 1})}
    new = {sha: data for sha, data in files.items() if sha not in present}
    for sha, data in new.items():
        for n, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
            chunk_id = f"{sha}:{n}"
            db["fs.chunks"].replace_one(
                {"_id": chunk_id},
                {"_id": chunk_id, "files_id": sha, "n": n, "data": data[start:start + CHUNK_BYTES]},
                upsert=True,
            )
        db["fs.files"].replace_one(
            {"_id": sha},
            {"_id": sha, "length": len(data), "chunkSize": CHUNK_BYTES,
             "uploadDate": datetime.now(UTC), "sha256": sha},
            upsert=True,
        )
    return len(new)


def get_file(db, sha: str) -> bytes | None:
    """The file's bytes, or None when it is missing or its content does not match its sha256."""
    meta = db["fs.files"].find_one({"_id": sha})
    if meta is None:
        return None
    chunks = db["fs.chunks"].find({"files_id": sha}).sort("n", 1)
    data = b"".join(bytes(c["data"]) for c in chunks)
    return data if sha256(data) == sha else None


def delete_files(db, shas: Iterable[str]) -> int:
    """The `fs.files` documents go first (the reverse of `put_files`): cut short, this
    leaves orphan chunks that a later put overwrites, never a file without its chunks."""
    shas = list(shas)
    if not shas:
        return 0
    deleted = db["fs.files"].delete_many({"_id": {"$in": shas}}).deleted_count
    db["fs.chunks"].delete_many({"files_id": {"$in": shas}})
    return deleted
