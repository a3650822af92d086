"""Resumable, verified downloads: NIH ChestX-ray14's 12 image archives and MedMNIST+ ChestMNIST npz files."""

from __future__ import annotations

import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import file_md5, progress

# NIH Clinical Center's public links for images_001.tar.gz ... images_012.tar.gz (batch_download_zips.py)
NIH_ARCHIVE_URLS = [
    f"https://nihcc.box.com/shared/static/{key}.gz"
    for key in (
        "vfk49d74nhbxq3nqjg0900w5nvkorp5c",
        "i28rlmbvmfjbl8p2n3ril0pptcmcu9d1",
        "f1t00wrtdk94satdfb9olcolqx20z2jp",
        "0aowwzs5lhjrceb3qp67ahp0rd1l1etg",
        "v5e3goj22zr6h8tzualxfsqlqaygfbsn",
        "asi7ikud9jwnkrnkj99jnpfkjdes7l6l",
        "jn1b4mw4n6lnh74ovmcjb8y48h8xj07n",
        "tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j",
        "upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj",
        "l6nilvfa9cg3s28tqv1qc1olm3gnz54p",
        "hhq8fkdgvcari67vfhs7ppg2w6ni4jze",
        "ioqwiy20ihqwyr8pf4c24eazhh281pbu",
    )
]
NIH_PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
# MedMNIST v3 (MedMNIST+) ChestMNIST files and MD5s as published in the `medmnist` package's INFO
MEDMNIST_CHEST = {
    28: (
        "https://zenodo.org/records/10519652/files/chestmnist.npz?download=1",
        "02c8a6516a18b556561a56cbdd36c4a8",
    ),
    64: (
        "https://zenodo.org/records/10519652/files/chestmnist_64.npz?download=1",
        "9de6cd0b934ebb5b7426cfba5efbae16",
    ),
    128: (
        "https://zenodo.org/records/10519652/files/chestmnist_128.npz?download=1",
        "db107e5590b27930b62dbaf558aebee3",
    ),
    224: (
        "https://zenodo.org/records/10519652/files/chestmnist_224.npz?download=1",
        "45bd33e6f06c3e8cdb481c74a89152aa",
    ),
}


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the partial file is already complete
            return None
        raise CxraugError(f"{url}: server answered HTTP {e.code} {e.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise CxraugError(
            f"cannot reach {urllib.request.urlparse(url).netloc} ({reason}); check the connection "
            "(offline?) and rerun: finished and partial files are kept"
        ) from None


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch url to dest, resuming a previous partial download; checks length and (if given) MD5."""
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, timeout)
    if response is not None:
        with response:
            if offset and response.status != 206:  # server ignored the Range header: start over
                offset = 0
            length = response.headers.get("Content-Length")
            expected = offset + int(length) if length is not None else None
            bar = progress(total=expected, initial=offset, desc=dest.name, unit="B", unit_scale=True)
            with open(part, "ab" if offset else "wb") as f:
                try:
                    while block := response.read(1 << 20):
                        f.write(block)
                        bar.update(len(block))
                except (TimeoutError, OSError) as e:
                    raise CxraugError(f"{dest.name}: download interrupted ({e}); rerun to resume") from None
                finally:
                    bar.close()
        if expected is not None and part.stat().st_size != expected:
            raise CxraugError(
                f"{dest.name}: got {part.stat().st_size:,} of {expected:,} bytes; rerun to resume"
            )
    if md5 is not None and (actual := file_md5(part)) != md5:
        part.unlink()
        raise CxraugError(
            f"{dest.name}: MD5 {actual} does not match the published {md5}; removed, rerun to retry"
        )
    part.replace(dest)
    return dest


def extract_archive(archive: Path, into: Path) -> int:
    """Extract a .tar.gz (gzip's CRC catches a corrupt archive); a marker makes a rerun skip it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CxraugError(
            f"{archive}: corrupt archive ({e}); delete it and rerun to download it again"
        ) from None
    _marker(archive.name, into).touch()
    return len(members)


def _marker(archive_name: str, into: Path) -> Path:
    return into / f".{archive_name}.extracted"


def download_nih(
    dest: Path, archives: list[int], mirror: str | None = None, keep_archives: bool = False
) -> int:
    """Download and extract archives (1..12) to dest/images_NNN/images/; returns the files extracted."""
    bad = [a for a in archives if not 1 <= a <= len(NIH_ARCHIVE_URLS)]
    if bad:
        raise CxraugError(f"--archives {bad}: NIH has archives 1 to {len(NIH_ARCHIVE_URLS)}")
    extracted = 0
    for number in archives:
        name, into = f"images_{number:03d}.tar.gz", dest / f"images_{number:03d}"
        if _marker(name, into).is_file():  # finished in an earlier run
            continue
        url = f"{mirror.rstrip('/')}/{name}" if mirror else NIH_ARCHIVE_URLS[number - 1]
        archive = download(url, dest / "archives" / name)
        extracted += extract_archive(archive, into)
        if not keep_archives:
            archive.unlink()
    return extracted


def download_medmnist(dest: Path, size: int, mirror: str | None = None) -> Path:
    if size not in MEDMNIST_CHEST:
        raise CxraugError(f"--size {size}: ChestMNIST comes in sizes {sorted(MEDMNIST_CHEST)}")
    url, md5 = MEDMNIST_CHEST[size]
    name = "chestmnist.npz" if size == 28 else f"chestmnist_{size}.npz"
    if mirror:
        url = f"{mirror.rstrip('/')}/{name}"
    return download(url, dest / name, md5=md5)
