"""Private, crash-safe file writes shared by the journal, export and snapshots (research A.4).

A temp file in the same folder (0600, O_EXCL, O_NOFOLLOW), fsynced, then ``os.replace`` (or,
when an existing file must not be replaced, a hard link that fails if the name is taken),
then the folder fsynced: a crash or a full disk leaves the old file or the new one, never
half of one. Folders llmrepl creates are 0700 and files 0600 whatever the umask (the umask
can only take bits away, so a restrictive one would leave them unusable, and a parent made
by ``mkdir(parents=True)`` would get the umask's mode); a symbolic link where llmrepl
expects its own folder or file makes the write fail rather than be followed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["private_temp", "private_dirs", "private_append", "read_inside", "try_lock", "fsync_dir",
           "atomic_write_text"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def private_temp(folder: Path) -> tuple[int, str]:
    """A new 0600 file in ``folder`` (opened for writing), and its name."""
    name = folder / f".{os.getpid()}-{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    fd = os.open(name, flags, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd, str(name)


def private_dirs(path: Path, top: Path | None = None) -> Path:
    """Make ``path`` and any missing folder above it, each 0700 whatever the umask; folders
    that exist keep their mode. Each part of ``path`` below ``top`` (default: its parent)
    must be a real folder, not a symbolic link, checked before anything is made inside it
    (raises OSError); above ``top`` links are followed (the person may link the state folder
    elsewhere). Returns ``path``."""
    path = Path(path)
    top = path.parent if top is None else Path(top)
    try:
        below = path.relative_to(top).parts
    except ValueError:
        top, below = path.parent, (path.name,)
    if not os.path.isdir(top):
        missing: list[Path] = []
        probe = top
        while not os.path.lexists(probe) and probe.parent != probe:
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            _make_dir(folder)
    current = top
    for part in below:
        current = current / part
        if _make_dir(current):
            continue
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, f"{current} is a symbolic link; llmrepl does not write through one")
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"{current} is not a folder")
    return path


def _make_dir(folder: Path) -> bool:
    """Make one folder 0700 (whatever the umask); False when something is already there."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return False
    _fix_dir_mode(folder)
    return True


def _fix_dir_mode(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def private_append(path: Path) -> int:
    """Open (or create) ``path`` for appending: 0600 whatever the umask, never through a
    symbolic link, and only a regular file (a FIFO planted under its name would block the
    open, a device would swallow the writes). Raises OSError."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_inside(path: Path, folder: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` only if it is a regular file inside ``folder`` (after resolving
    links on the way), not itself a symbolic link, of at most ``limit`` bytes; else None.
    For reading back a file whose name came from outside (a journal)."""
    try:
        top = os.path.realpath(folder)
        if os.path.commonpath([os.path.realpath(path), top]) != top:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting. False when another
    open file (another llmrepl) holds it; True when taken, or when the file system cannot
    lock at all (nothing to enforce then). The lock goes with the file description: it ends
    when every descriptor for it is closed, a forked child's copy included."""
    try:
        import fcntl
    except ImportError:  # Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    return True


def fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder``; quietly skipped where a filesystem refuses it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> None:
    """Write ``path`` with ``text`` atomically, mode 0600. Raises OSError; ``FileExistsError``
    when ``replace`` is false and ``path`` exists (a symbolic link included), checked at the
    moment of the rename, so nothing can slip in between. A symbolic link at ``path`` is
    replaced by the file, never written through."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = private_temp(folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(folder)


def _link_new(tmp: str, path: Path) -> None:
    """Give the finished temp file the name ``path`` only if that name is free; ``tmp`` is gone after."""
    try:
        os.link(tmp, path, follow_symlinks=False)  # EEXIST if the name is taken, atomically
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a narrow window, same user only)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)
