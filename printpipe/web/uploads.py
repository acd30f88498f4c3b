"""Checks on what a browser uploads, before any of it is read as DICOM.

- A ``.zip`` is checked member by member: no absolute path (``/x``, ``C:\\x``, ``\\\\server``), no
  ``..`` component, no symbolic link, not more members or more unpacked bytes than the limits (a
  "zip bomb"). It is then handed to :func:`printpipe.dicom.read_series` as it is, which reads the
  members in memory: nothing is ever unpacked to disk under a name taken from the archive.
- A folder upload arrives as many files whose names carry their relative path; the same path rules
  apply, and the files are stored under numbered names (``000001.dcm`` ...), so a folder or file
  name (often a patient's name on a hospital export) is never written to disk.

Errors are :class:`~printpipe.errors.InputError` with ``msgid``/``fields`` attributes, so the web
page shows them in the reader's language (:func:`printpipe.i18n.translate_error`); no message names
a member of the upload, which could carry a patient identifier.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable

from printpipe.errors import InputError
from printpipe.i18n import N_

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "check_zip", "check_relative_name", "save_folder_files", "upload_error"]

#: default cap on one upload (request body), in MiB
DEFAULT_MAX_UPLOAD_MB = 2048
#: an unpacked CT above this is refused (the largest whole-body CTs are 2-3 GB)
MAX_UNPACKED_BYTES = 8 * 1024**3
#: more members than this is refused (a thin-slice CT has a few thousand files)
MAX_MEMBERS = 100_000

_DRIVE = re.compile(r"^[A-Za-z]:")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


def upload_error(msgid: str, **fields) -> InputError:
    """An :class:`InputError` whose message translates exactly (``msgid`` is an English template)."""
    exc = InputError(msgid.format(**fields))
    exc.msgid = msgid  # type: ignore[attr-defined]
    exc.fields = fields  # type: ignore[attr-defined]
    return exc


def check_relative_name(name: str) -> PurePosixPath:
    """The path ``name`` as a safe relative path, or :class:`InputError` when it is not one."""
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise upload_error(N_("the upload holds a file with an absolute path; zip the CT folder itself "
                              "(its contents, with paths relative to it) and upload it again"))
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise upload_error(N_("the upload holds a path with '..' that points outside its folder; zip "
                              "the CT folder itself and upload it again"))
    if any("\x00" in p for p in parts):
        raise upload_error(N_("the upload holds a file name with a NUL character; zip the CT folder "
                              "again and upload it"))
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def check_zip(path: str | Path, *, max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
              max_members: int = MAX_MEMBERS) -> int:
    """Check an uploaded zip archive; return the number of files in it.

    Raises
    ------
    InputError
        Not a zip archive, an absolute or climbing (``..``) member path, a symbolic link, too many
        members, too many unpacked bytes, or no files at all.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise upload_error(N_("the uploaded file is not a zip archive (or it is damaged); zip the CT "
                              "folder again, or upload the folder itself"))
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise upload_error(N_("the uploaded file is not a zip archive (or it is damaged); zip the CT "
                              "folder again, or upload the folder itself")) from None
    if len(infos) > max_members:
        raise upload_error(N_("the zip archive holds {count} entries, more than the {limit} allowed; "
                              "upload one CT series at a time"), count=len(infos), limit=max_members)
    total = 0
    files = 0
    for info in infos:
        check_relative_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise upload_error(N_("the zip archive holds a symbolic link; zip the CT files themselves "
                                  "(without links) and upload it again"))
        if not info.is_dir():
            files += 1
            total += info.file_size
    if total > max_unpacked_bytes:
        raise upload_error(N_("the zip archive unpacks to {size} GB, more than the {limit} GB allowed; "
                              "upload one CT series at a time"),
                           size=f"{total / 1024**3:.1f}", limit=f"{max_unpacked_bytes / 1024**3:.0f}")
    if files == 0:
        raise upload_error(N_("the zip archive is empty; put the CT's DICOM files in it and upload it again"))
    return files


def save_folder_files(files: Iterable[tuple[str, BinaryIO]], dest: str | Path) -> int:
    """Store a folder upload's files in ``dest`` under numbered names; return how many.

    ``files`` yields ``(relative name as the browser sent it, binary file object)``. Every name is
    checked with :func:`check_relative_name` first; then only a short alphanumeric suffix of it is
    kept (``.dcm``), never the name itself.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    items = list(files)
    for name, _fh in items:
        check_relative_name(name)
    count = 0
    for name, fh in items:
        rel = check_relative_name(name)
        if rel.name in ("", "."):
            continue
        suffix = PurePosixPath(rel.name).suffix
        count += 1
        target = dest / f"{count:06d}{suffix if _SUFFIX.match(suffix) else ''}"
        with open(target, "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
    if count == 0:
        raise upload_error(N_("the folder upload holds no files; choose the folder with the CT's DICOM files"))
    return count
