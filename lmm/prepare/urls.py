"""Downloads from official URLs: resumable with HTTP Range into a `.part` file, renamed only when size and checksum
are right, so that a half-downloaded file never counts as present."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from lmm.prepare.errors import PrepareError
from lmm.prepare.space import human, require_space

CHUNK = 1 << 20
USER_AGENT = "lmm-prepare/0.1 (+python urllib)"
# Seconds before retry n (connection reset, timeout, a body cut short): the `.part` file is resumed each time.
RETRY_WAIT_S = (1, 2, 5, 10, 20)
TIMEOUT_S = 60.0


def _request(url: str, method: str = "GET", start: int = 0) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers, method=method)


def _http_error(url: str, err: urllib.error.HTTPError) -> PrepareError:
    hint = {401: "the server wants credentials", 403: "access is refused (was the file moved or made private?)",
            404: "not found (was the file moved?)"}.get(err.code, "")
    return PrepareError(f"{url}: HTTP {err.code} {err.reason}" + (f": {hint}" if hint else ""))


def remote_size(url: str, timeout: float = TIMEOUT_S) -> Optional[int]:
    """Content-Length of a HEAD request (None when the server does not say)."""
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else None
    except urllib.error.HTTPError as err:
        raise _http_error(url, err) from err
    except (urllib.error.URLError, OSError) as err:
        raise PrepareError(f"cannot reach {url}: {err}. prepare needs internet: run it on a login node") from err


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, size: Optional[int], sha256: Optional[str] = None,
               md5: Optional[str] = None) -> Optional[str]:
    """Why `path` is not the expected file (size first, then checksums), or None when it is."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"has {actual} bytes, expected {size}"
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            digest = file_digest(path, algorithm)
            if digest != expected.lower():
                return f"{algorithm} {digest} does not match the published {expected}"
    return None


def download(url: str, final: Path, size: Optional[int] = None, sha256: Optional[str] = None,
             md5: Optional[str] = None, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Download `url` to `final` through `<final>.part`, resuming a `.part` left by an earlier attempt.

    The `.part` is renamed to `final` only when its size equals the published size (`size`, else the server's) and
    its checksum matches; a wrong checksum deletes it (the next run downloads afresh), a short file keeps it (the next
    run resumes it).
    """
    from tqdm import tqdm

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    total = size
    attempt = 0
    bar = None
    try:
        while True:
            try:
                with urllib.request.urlopen(_request(url, start=have), timeout=timeout) as resp:
                    if have and resp.status == 200:  # the server ignored Range: start over
                        have = 0
                    if resp.status == 206:
                        content_range = resp.headers.get("Content-Range", "")
                        if not content_range.startswith(f"bytes {have}-"):
                            raise PrepareError(f"{url}: the server answered Range bytes={have}- with {content_range!r}")
                        served = int(content_range.rsplit("/", 1)[-1])
                    else:
                        length = resp.headers.get("Content-Length")
                        served = int(length) if length is not None else None
                    if size is not None and served is not None and served != size:
                        raise PrepareError(f"{url}: the server has {served} bytes, the published file {size}: the "
                                           "file changed upstream; nothing was kept")
                    total = total or served
                    if total is not None and have == 0:
                        require_space([(part, total, final.name)], f"downloading {final.name}")
                    if bar is None:
                        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=final.name,
                                   disable=not progress)
                    else:
                        bar.reset(total=total)
                        bar.update(have)
                    with open(part, "ab" if have else "wb") as out:
                        while chunk := resp.read(CHUNK):
                            out.write(chunk)
                            have += len(chunk)
                            bar.update(len(chunk))
                if total is None or have >= total:
                    break
                raise http.client.IncompleteRead(b"", total - have)  # the body ended early: resume
            except urllib.error.HTTPError as err:
                if err.code == 416 and total is not None and have == total:
                    break  # the .part was already complete
                if err.code == 416:  # a .part longer than the file: start over
                    part.unlink(missing_ok=True)
                    have = 0
                else:
                    raise _http_error(url, err) from err
            except (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError, TimeoutError,
                    urllib.error.URLError) as err:
                have = part.stat().st_size if part.exists() else 0
                if attempt >= len(RETRY_WAIT_S):
                    raise PrepareError(
                        f"{url}: download interrupted ({type(err).__name__}: {err}) after {len(RETRY_WAIT_S)} retries, "
                        f"{human(have)} of {human(total)} kept in {part}; run the same command again to resume"
                    ) from err
                time.sleep(RETRY_WAIT_S[attempt])
                attempt += 1
            except OSError as err:
                if err.errno == 28:  # ENOSPC
                    raise PrepareError(f"disk full while downloading {url} to {part}: free space and run again "
                                       "(the download resumes)") from err
                raise
    finally:
        if bar is not None:
            bar.close()
    problem = check_file(part, total, sha256, md5)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise PrepareError(f"{url}: the download {problem}; it was deleted, run the same command again to "
                           "download it afresh (if this repeats, the file changed upstream)")
    os.replace(part, final)
    return final
