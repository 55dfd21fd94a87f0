"""Files checked by their sha256, and priors given by URL: downloaded once into the torch hub cache
(``$TORCH_HOME/hub/checkpoints/dgnam/``) with a progress bar, kept only when their sha256 is the one
given with the URL. Nothing here unpickles: the file is then read like a local one (weights only)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from dgnam.errors import DgnamValueError, first_line

URL_SCHEMES = ("http://", "https://", "file://")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: a file is hashed once


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(URL_SCHEMES)


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex), remembered while the file's size and time stay the same."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def check_sha256_arg(sha256: str | None, what: str) -> str:
    """``sha256`` as 64 lowercase hex digits, or a one-line error naming ``what`` it belongs to."""
    s = str(sha256 or "").strip().lower()
    if not _HEX64.fullmatch(s):
        raise DgnamValueError(f"{what} needs its sha256 as 64 hex digits (param.prior_sha256=<sha256>, or "
                         f"sha256= from Python), got {sha256!r}")
    return s


def check_file(path: str | os.PathLike, sha256: str, what: str) -> Path:
    """``path`` if its sha256 is ``sha256``, else a one-line error (a damaged or replaced file)."""
    got = sha256_of(path)
    if got != sha256:
        raise DgnamValueError(f"{what} ({path}) has sha256 {got[:16]}..., expected {sha256[:16]}...: the file is "
                         f"damaged or another one; reinstall dgnam or give the file that matches")
    return Path(path)


def cache_dir() -> Path:
    """Where downloaded priors are kept: the torch hub cache (``$TORCH_HOME``, default ~/.cache/torch)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "dgnam"


def fetch(url: str, sha256: str | None, progress: bool = True) -> Path:
    """The local copy of the file at ``url`` (http, https or file), downloaded the first time into
    :func:`cache_dir` under its own name, and used only if its sha256 is ``sha256``. A download that
    fails or does not match leaves nothing in the cache; either is one line."""
    sha256 = check_sha256_arg(sha256, f"the prior {url}")
    name = Path(unquote(urlparse(url).path)).name or "prior.pt"
    dst = cache_dir() / f"{sha256[:12]}-{name}"
    if dst.is_file() and sha256_of(dst) == sha256:
        return dst
    import torch.hub

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=dst.parent)
    os.close(fd)
    try:
        try:
            torch.hub.download_url_to_file(url, tmp, progress=progress)
        except Exception as e:  # URLError, HTTPError, a refused connection, a missing file: one line
            reason = getattr(e, "reason", None) or first_line(e, 160)
            raise DgnamValueError(f"cannot download the prior {url}: {reason}") from None
        got = sha256_of(tmp)
        if got != sha256:
            raise DgnamValueError(f"the prior downloaded from {url} has sha256 {got[:16]}..., not the given "
                             f"{sha256[:16]}...; it was not kept (check the URL and its sha256)")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst
