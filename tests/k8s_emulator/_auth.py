"""Bearer-token users with allow/deny rules, checked like RBAC's resource attributes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
VERB_GROUPS = {
    "*": ALL_VERBS,
    "read": frozenset({"get", "list", "watch"}),
    "write": frozenset({"create", "update", "patch", "delete", "deletecollection"}),
}


@dataclass(frozen=True)
class Rule:
    """``"[verbs ]resource[@namespace]"``: ``"pods/exec"``, ``"write secrets"``, ``"get,list pods@nats"``.

    Verbs are comma-separated API verbs or the groups ``read``, ``write``, ``*`` (default ``*``);
    resource is ``secrets``, ``pods``, ``pods/exec``, ``pods/log``, ``configmaps``, ``namespaces`` or ``*``.
    """

    verbs: frozenset
    resource: str
    namespace: str | None = None

    @classmethod
    def parse(cls, text) -> "Rule":
        if isinstance(text, Rule):
            return text
        words = text.split()
        if len(words) == 1:
            verbs_text, target = "*", words[0]
        elif len(words) == 2:
            verbs_text, target = words
        else:
            raise ValueError("rule %r: expected '[verbs ]resource[@namespace]'" % text)
        verbs = set()
        for verb in verbs_text.split(","):
            verb = verb.strip().lower()
            if verb in VERB_GROUPS:
                verbs |= VERB_GROUPS[verb]
            elif verb in ALL_VERBS:
                verbs.add(verb)
            else:
                raise ValueError("rule %r: unknown verb %r" % (text, verb))
        resource, namespace = target.partition("@")[::2]
        return cls(frozenset(verbs), resource, namespace or None)

    def matches(self, verb: str, resource: str, namespace: str | None) -> bool:
        return (verb in self.verbs and self.resource in ("*", resource)
                and (self.namespace is None or self.namespace == namespace))


@dataclass
class User:
    """A kubeconfig user of an emulated cluster.

    ``allow=None`` grants everything not in ``deny``; otherwise only what a rule in ``allow`` grants and
    ``deny`` does not refuse. ``context`` names this user's kubeconfig context suffix
    (``<cluster>-<context>``; default: the last ``:``-part of ``name``).
    """

    name: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    allow: tuple | None = None
    deny: tuple = ()
    context: str | None = None

    def __post_init__(self):
        self.allow = None if self.allow is None else tuple(Rule.parse(r) for r in self.allow)
        self.deny = tuple(Rule.parse(r) for r in self.deny)
        if self.context is None:
            self.context = self.name.rsplit(":", 1)[-1]

    @classmethod
    def service_account(cls, namespace: str, name: str, **kwargs) -> "User":
        kwargs.setdefault("context", name)
        return cls(name="system:serviceaccount:%s:%s" % (namespace, name), **kwargs)

    def allowed(self, verb: str, resource: str, namespace: str | None) -> bool:
        if any(rule.matches(verb, resource, namespace) for rule in self.deny):
            return False
        return self.allow is None or any(rule.matches(verb, resource, namespace) for rule in self.allow)
