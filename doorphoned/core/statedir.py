"""Owner-only modes for the state directory, whatever starts the daemon.

Why the daemon does this itself: systemd's unit sets ``UMask=0027`` and ``StateDirectoryMode=0750``,
but ``make run``, a shell or another init leave files at the login umask (0644): any local user could
then read card UIDs, names and the door log from the database and the log file. So the process sets
its own umask before it creates anything and tightens what earlier runs left behind.

The one thing the control socket's group needs is to reach the socket: when it lives inside the
state directory and that directory belongs to the group, the directory is 0750 (group may enter,
others may not); otherwise 0700. Files are 0600: the group talks to the daemon, it does not read
its database.
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
SHARED_DIR_MODE = 0o750  # the control socket's group may reach the socket inside


def set_umask() -> None:
    """Everything created from now on (database, WAL, logs, keys) is owner-only."""
    os.umask(UMASK)


def secure_state_dir(state_dir: Path, socket_path: Path, group: str) -> list[str]:
    """Create ``state_dir`` if needed and set owner-only modes; return what could not be fixed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    _chmod(state_dir, _dir_mode(state_dir, socket_path, group), problems)
    for entry in _entries(state_dir):
        _secure_entry(entry, problems)
        if entry.name == "log" and entry.is_dir() and not entry.is_symlink():
            for inner in _entries(entry):
                _secure_entry(inner, problems)
    for problem in problems:
        log.warning("state directory: %s", problem)
    return problems


def _dir_mode(state_dir: Path, socket_path: Path, group: str) -> int:
    """0750 when the control socket's group must pass through this directory, else 0700."""
    if socket_path.parent.absolute() != state_dir.absolute():
        return DIR_MODE
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return DIR_MODE
    if os.geteuid() == 0 and state_dir.stat().st_gid != gid:
        try:
            os.chown(state_dir, -1, gid)
        except OSError:
            return DIR_MODE
    return SHARED_DIR_MODE if state_dir.stat().st_gid == gid else DIR_MODE


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def _secure_entry(path: Path, problems: list[str]) -> None:
    """Regular files 0600, directories 0700; sockets (hw-sim's, the control socket) and symlinks
    (the keypad's pty link) are left alone: they are not ours, or are set where they are made."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        _chmod(path, FILE_MODE, problems)
    elif stat.S_ISDIR(mode):
        _chmod(path, DIR_MODE, problems)


def _chmod(path: Path, mode: int, problems: list[str]) -> None:
    try:
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        problems.append(f"cannot set mode {mode:o} on {path}: {exc.strerror}")


def mode_problems(paths: list[Path]) -> list[str]:
    """For ``doctor``: each existing path whose mode lets other users (or the group) read or write it."""
    found = []
    for path in paths:
        try:
            st = path.lstat()
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        allowed = SHARED_DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
        if mode & ~allowed:
            found.append(f"{path.name} is mode {mode:o} (readable by others; want {allowed:o} or stricter)")
    return found
