"""Single-line ``key=value`` log records on stderr, with known secret values masked."""

from __future__ import annotations

import sys

from catools.sync.common import PROG

from ansible_collections.securetransport.ca_rotation.plugins.module_utils._epoch import isoformat, utcnow  # noqa: E402

#: Longest logged value (messages can quote attacker-controlled fields).
MAX_FIELD = 2000
LOG_LEVELS = {'debug': 10, 'info': 20, 'warning': 30, 'error': 40}


class Log:
    """Single-line ``key=value`` log records on stderr; masks known secret values."""

    def __init__(self, service=None, level='info', stream=None):
        self.service = service
        self.level = LOG_LEVELS.get(level, 20)
        self.stream = stream or sys.stderr
        self.secrets = set()

    def mask(self, text):
        """``text`` with every known secret replaced by ``***``, then cut to MAX_FIELD characters."""
        text = str(text)
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, '***')
        if len(text) > MAX_FIELD:
            text = text[:MAX_FIELD] + '...(%d more characters)' % (len(text) - MAX_FIELD)
        return text

    @staticmethod
    def _value(value):
        text = str(value)
        text = text.replace('\\', '\\\\').replace('\r', '\\r').replace('\n', '\\n').replace('"', '\\"')
        if not text or any(c in text for c in ' =\t"\\'):
            return '"%s"' % text
        return text

    def __call__(self, level, event, msg=None, **fields):
        if LOG_LEVELS[level] < self.level:
            return
        parts = ['ts=%s' % isoformat(utcnow()), 'level=%s' % level, 'prog=%s' % PROG]
        if self.service:
            parts.append('service=%s' % self._value(self.service))
        parts.append('event=%s' % event)
        for key, value in fields.items():
            if value is not None:
                parts.append('%s=%s' % (key, self._value(self.mask(value))))
        if msg:
            parts.append('msg=%s' % self._value(self.mask(msg)))
        line = ' '.join(parts)
        try:
            self.stream.write(line + '\n')
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - stderr closed
            pass
