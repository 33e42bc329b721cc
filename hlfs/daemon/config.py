"""
The daemon's configuration: one immutable value built from the command
line, shared by every part of the service.
"""

import grp
import os
from dataclasses import dataclass

from hlfs.rpc.limits import StreamLimits


class ConfigError(Exception):
    """
    A configuration value is unusable; the message says which and why, in
    one line.
    """


@dataclass(frozen=True)
class Config:
    mount: str = "/mail"
    linkname: str = "home"
    subdir: str = ".mailspool"
    alt_dir: str = "/var/alt_mail"
    port: int = 0
    interface: str = "127.0.0.1"
    password_file: str | None = None
    group: str = "hlfs"
    insecure: bool = False
    no_mount: bool = False
    port_file: str | None = None
    cache_interval: float = 300.0
    reload_interval: float = 900.0
    verify: bool = True
    probe_deadline: float = 1.0
    home_checks: int = 8
    lookup_threads: int = 4
    user_cache: int = 100_000
    mount_options: str = ""
    fast_start: bool = False
    allow_attribute_cache: bool = False
    portmap: bool = True
    verbose: bool = False
    # What any local user can make the daemon hold (see hlfs.rpc.limits).
    max_connections: int = StreamLimits.max_connections
    max_unprivileged: int = StreamLimits.max_unprivileged
    max_record: int = StreamLimits.max_record
    calls_per_turn: int = StreamLimits.calls_per_turn
    max_pending: int = StreamLimits.max_pending
    idle_timeout: float = StreamLimits.idle_timeout
    record_timeout: float = StreamLimits.record_timeout
    stall_timeout: float = StreamLimits.stall_timeout
    reply_cache_entries: int = 32768
    reply_cache_bytes: int = 32 * 1024 * 1024
    fd_reserve: int = 64
    retry_interval: float = 5.0
    uid_min: int = 1000
    # Seconds between counts of the alternate spool (and looks at the
    # mount) for the metrics; 0: never.
    alt_spool_interval: float = 60.0
    # The daemon's name among several on the host (hlfs@NAME.service).
    name: str | None = None

    @property
    def export_path(self):
        return os.fsencode(self.mount)

    @property
    def stream_limits(self):
        return StreamLimits(
            max_record=self.max_record,
            record_timeout=self.record_timeout,
            idle_timeout=self.idle_timeout,
            stall_timeout=self.stall_timeout,
            max_connections=self.max_connections,
            max_unprivileged=self.max_unprivileged,
            calls_per_turn=self.calls_per_turn,
            max_pending=self.max_pending,
        )


def resolve_group(group):
    """
    Return the gid named by C{group} (a name or a number), or L{None} when
    no such group exists: the HLFS_GID feature is then off.
    """
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


#: Where login.defs(5) says which uids are login accounts.
LOGIN_DEFS = "/etc/login.defs"

#: UID_MIN when login.defs does not say (shadow's own default).
DEFAULT_UID_MIN = 1000


def login_defs_uid_min(path=LOGIN_DEFS):
    """
    Return C{UID_MIN} from login.defs(5), or L{DEFAULT_UID_MIN} when the
    file is missing or does not set it.

    @raise ConfigError: the file sets it to something that is not a uid.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return DEFAULT_UID_MIN
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    value = None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "UID_MIN":
            value = fields[1]
    if value is None:
        return DEFAULT_UID_MIN
    return check_uid("UID_MIN in " + path, value)


def check_uid(option, value):
    try:
        uid = int(value)
    except ValueError:
        raise ConfigError(f"{option} must be a uid, not {value!r}") from None
    if not 0 <= uid <= 0xFFFFFFFF:
        raise ConfigError(f"{option} must be between 0 and 4294967295, not {uid}")
    return uid


def check_component(option, value):
    """
    A link name or spool subdirectory: one path component.
    """
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise ConfigError(f"--{option} must be a single path component, not {value!r}")
    return value


def check_name(value):
    """
    A daemon's name: what systemd allows in an instance name, short.
    """
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_.:@\\" for c in value):
        raise ConfigError(f"--name must be 1 to 64 letters, digits or -_.:@\\, not {value!r}")
    return value


def check_absolute(option, value):
    if not value.startswith("/") or "\0" in value:
        raise ConfigError(f"--{option} must be an absolute path, not {value!r}")
    return os.path.normpath(value)


def check_port(option, value):
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"--{option} must be a port number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--{option} must be between 0 and 65535, not {port}")
    return port


def check_seconds(option, value, minimum=0.0):
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"--{option} must be a number of seconds, not {value!r}") from None
    if not seconds >= minimum or seconds > 10**9:
        raise ConfigError(f"--{option} must be at least {minimum:g} seconds, not {value}")
    return seconds


def check_count(option, value, minimum=1, maximum=1024):
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--{option} must be a whole number, not {value!r}") from None
    if not minimum <= count <= maximum:
        raise ConfigError(f"--{option} must be between {minimum} and {maximum}, not {count}")
    return count


def check_mount_options(value):
    """
    Extra mount options: a comma-separated list, without the ones hlfs
    sets itself to keep one user's link from another.
    """
    for option in filter(None, value.split(",")):
        if not option.replace("=", "").replace("_", "").replace(".", "").replace("-", "").isalnum():
            raise ConfigError(f"-o: invalid mount option {option!r}")
    return value.strip(",")
