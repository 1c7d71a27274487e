"""What every part of ca-bundle-sync shares: the program name, exit codes, errors and outcomes."""

from __future__ import annotations

PROG = 'ca-bundle-sync'

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INVALID = 3
EXIT_BUSY = 75  # EX_TEMPFAIL, as scripts/ca-rotate-cron

EXIT_CODES = (
    (EXIT_OK, 'ok', 'a newer bundle was applied, or there was nothing new (older or equal generations are skipped)'),
    (EXIT_FAILURE, 'failure', 'a transient failure (reload command, disk, NATS, OpenBao); the message stays for a retry'),
    (EXIT_CONFIG, 'config', 'configuration or usage error (options, config file, key file, state file, consumer mismatch)'),
    (EXIT_INVALID, 'invalid', 'an invalid message (forged, malformed, expired) was seen and terminated; nothing failed'),
    (EXIT_BUSY, 'busy', 'another ca-bundle-sync holds the lock of this state file'),
)

#: Upper bound of messages handled by one --once run (a backlog is bounded by the stream anyway).
ONCE_MAX_MESSAGES = 1000
ACK_TIMEOUT = 5.0


class ConfigError(Exception):
    """Bad options, config file, key file or state file: exit 2."""


class Busy(Exception):
    """Another instance holds the lock: exit 75."""


class Transient(Exception):
    """A failure worth retrying later (the message is negatively acknowledged with a delay)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Invalid(Exception):
    """The message can never be applied (it is terminated)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- the work
class Outcome:
    """What happened to one message: applied | unchanged | stale | invalid | retry."""

    def __init__(self, kind, reason=None, text=None, message=None):
        self.kind = kind
        self.reason = reason
        self.text = text
        self.message = message

    def __repr__(self):
        return 'Outcome(%s, %s)' % (self.kind, self.reason)


def number(value):
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else '%d' % value
    return str(value)
