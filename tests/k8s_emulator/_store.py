"""In-memory object store with the API server's write semantics (resourceVersion, uid, conflicts)."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import random
import re
import string
import threading
import uuid

import yaml

from . import _errors as errors
from ._patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from ._selectors import SelectorError, match_fields, match_labels, parse_field_selector, parse_label_selector

KINDS = {"namespaces": "Namespace", "secrets": "Secret", "configmaps": "ConfigMap", "pods": "Pod"}
NAMESPACED = {"secrets", "configmaps", "pods"}
WRITABLE = {"namespaces", "secrets", "configmaps"}
MAX_DATA_BYTES = 1024 * 1024

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_rv(obj: dict) -> dict:
    clone = copy.deepcopy(obj)
    clone.get("metadata", {}).pop("resourceVersion", None)
    return clone


class Store:
    """Objects of one emulated cluster. Thread-safe: the HTTP loop and test threads both use it.

    ``listeners`` are called as ``listener(resource, namespace, name, obj_or_None)`` after every
    committed change (inside the lock, so they must only schedule work, never block).
    ``renderers[resource](obj) -> obj`` decorate objects on every read (live pod status).
    """

    def __init__(self):
        self.lock = threading.RLock()
        self._rv = 0
        self._objects: dict = {resource: {} for resource in KINDS}
        self.listeners: list = []
        self.renderers: dict = {}

    # ---- helpers -----------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def _key(self, resource: str, namespace: str | None, name: str):
        return (namespace if resource in NAMESPACED else None, name)

    def _render(self, resource: str, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        renderer = self.renderers.get(resource)
        return renderer(obj) if renderer else obj

    def _notify(self, resource, namespace, name, obj):
        for listener in list(self.listeners):
            listener(resource, namespace, name, copy.deepcopy(obj) if obj is not None else None)

    def _require_namespace(self, resource: str, namespace: str | None):
        if resource in NAMESPACED and (None, namespace) not in self._objects["namespaces"]:
            raise errors.not_found("namespaces", namespace or "")

    # ---- reads -------------------------------------------------------------------------------
    def get(self, resource: str, namespace: str | None, name: str) -> dict:
        with self.lock:
            obj = self._objects[resource].get(self._key(resource, namespace, name))
            if obj is None:
                raise errors.not_found(resource, name)
            return self._render(resource, obj)

    def find(self, resource: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.get(resource, namespace, name)
        except errors.ApiError:
            return None

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None, continue_token: str | None = None) -> dict:
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector)
        except SelectorError as exc:
            raise errors.bad_request(str(exc))
        start = None
        if continue_token:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(continue_token.encode()).decode()))
            except (ValueError, TypeError, binascii.Error):
                raise errors.bad_request("continue key is not valid: %r" % continue_token)
        with self.lock:
            items = []
            for key in sorted(self._objects[resource], key=lambda k: (k[0] or "", k[1])):
                obj = self._objects[resource][key]
                if namespace is not None and key[0] != namespace:
                    continue
                if start is not None and (key[0] or "", key[1]) <= (start[0] or "", start[1]):
                    continue
                rendered = self._render(resource, obj)
                if match_labels(labels, rendered["metadata"].get("labels")) and match_fields(fields, rendered):
                    items.append((key, rendered))
            metadata = {"resourceVersion": str(self._rv)}
            if limit and len(items) > limit:
                items = items[:limit]
                last = items[-1][0]
                metadata["continue"] = base64.urlsafe_b64encode(json.dumps([last[0] or "", last[1]]).encode()).decode()
                metadata["remainingItemCount"] = 0
            return {"kind": KINDS[resource] + "List", "apiVersion": "v1", "metadata": metadata, "items": [entry[1] for entry in items]}

    # ---- writes ------------------------------------------------------------------------------
    def _prepare(self, resource: str, namespace: str | None, url_name: str | None, body, old: dict | None) -> dict:
        kind = KINDS[resource]
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object of kind %s" % kind)
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, kind):
            raise errors.bad_request("the object provided is unrecognized (must be of type %s): kind %r" % (kind, obj.get("kind")))
        obj["kind"] = kind
        obj["apiVersion"] = "v1"
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        name = meta.get("name")
        if not name and old is None and meta.get("generateName"):
            name = meta["generateName"] + "".join(random.choice(string.ascii_lowercase + string.digits) for dummy in range(5))
            meta["name"] = name
        if url_name is not None and name and name != url_name:
            raise errors.bad_request("the name of the object (%s) does not match the name on the URL (%s)" % (name, url_name))
        name = name or url_name
        if not name:
            raise errors.invalid(kind, resource, "", "metadata.name", "Required value: name or generateName is required")
        meta["name"] = name
        if len(name) > 253 or not _NAME_RE.match(name) or (resource == "namespaces" and (len(name) > 63 or not _LABEL_NAME_RE.match(name))):
            raise errors.invalid(kind, resource, name, "metadata.name",
                                 'Invalid value: "%s": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '
                                 "'-' or '.', and must start and end with an alphanumeric character" % name)
        if resource in NAMESPACED:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is None:
                meta.pop(field, None)
            elif not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise errors.invalid(kind, resource, name, "metadata." + field, "Invalid value: must be a map of string to string")
        if resource == "secrets":
            self._prepare_secret(obj, name, old)
        elif resource == "configmaps":
            for field in ("data", "binaryData"):
                if obj.get(field) is None:
                    obj.pop(field, None)
                elif not isinstance(obj[field], dict) or not all(isinstance(v, str) for v in obj[field].values()):
                    raise errors.invalid(kind, resource, name, field, "Invalid value: must be a map of string to string")
        elif resource == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        # System fields are owned by the server.
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
        meta.pop("managedFields", None)
        meta.pop("deletionTimestamp", None)
        return obj

    @staticmethod
    def _prepare_secret(obj: dict, name: str, old: dict | None):
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise errors.bad_request("Secret.data must be a map of string to base64 string")
        string_data = obj.pop("stringData", None) or {}
        for key, value in string_data.items():
            if not isinstance(value, str):
                raise errors.bad_request("Secret.stringData values must be strings")
            data[key] = base64.b64encode(value.encode()).decode()
        total = 0
        for key, value in data.items():
            if not _KEY_RE.match(key):
                raise errors.invalid("Secret", "secrets", name, "data[%s]" % key,
                                     "Invalid value: \"%s\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'" % key)
            try:
                total += len(base64.b64decode(value.encode(), validate=True))
            except (binascii.Error, AttributeError, ValueError):
                raise errors.bad_request("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data for key %r" % key)
        if total > MAX_DATA_BYTES:
            raise errors.invalid("Secret", "secrets", name, "data", "Too long: must have at most %d bytes" % MAX_DATA_BYTES)
        if data or "data" in obj:
            obj["data"] = data
        obj.setdefault("type", "Opaque")
        if old is not None:
            if obj["type"] != old.get("type", "Opaque"):
                raise errors.invalid("Secret", "secrets", name, "type", 'Invalid value: "%s": field is immutable' % obj["type"])
            if old.get("immutable") and (obj.get("data") != old.get("data") or not obj.get("immutable")):
                raise errors.invalid("Secret", "secrets", name, "data", "Forbidden: field is immutable when `immutable` is set")

    def create(self, resource: str, namespace: str | None, body, dry_run: bool = False) -> dict:
        if resource not in WRITABLE:
            raise errors.method_not_allowed()
        with self.lock:
            self._require_namespace(resource, namespace)
            obj = self._prepare(resource, namespace, None, body, None)
            key = self._key(resource, namespace, obj["metadata"]["name"])
            if key in self._objects[resource]:
                raise errors.already_exists(resource, key[1])
            if dry_run:
                return self._render(resource, obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[resource][key] = obj
            self._notify(resource, namespace, key[1], obj)
            return self._render(resource, obj)

    def _commit_update(self, resource: str, namespace: str | None, name: str, obj: dict, old: dict, dry_run: bool) -> dict:
        wanted = obj["metadata"].get("resourceVersion")
        if wanted not in (None, "") and wanted != old["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name)
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if obj == old or dry_run:  # a no-op update keeps the resourceVersion, as the API server does
            return self._render(resource, obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[resource][self._key(resource, namespace, name)] = obj
        self._notify(resource, namespace, name, obj)
        return self._render(resource, obj)

    def replace(self, resource: str, namespace: str | None, name: str, body, dry_run: bool = False) -> dict:
        if resource not in WRITABLE:
            raise errors.method_not_allowed()
        with self.lock:
            old = self._objects[resource].get(self._key(resource, namespace, name))
            if old is None:
                raise errors.not_found(resource, name)
            wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            obj = self._prepare(resource, namespace, name, body, old)
            obj["metadata"]["resourceVersion"] = wanted
            return self._commit_update(resource, namespace, name, obj, old, dry_run)

    def patch(self, resource: str, namespace: str | None, name: str, content_type: str, raw_body: bytes,
              dry_run: bool = False, field_manager: str | None = None) -> dict:
        if resource not in WRITABLE:
            raise errors.method_not_allowed()
        content_type = (content_type or "").split(";")[0].strip().lower()
        try:
            if content_type == APPLY_PATCH:
                patch = yaml.safe_load(raw_body.decode() or "{}")
            elif content_type in (MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH):
                patch = json.loads(raw_body.decode() or "null")
            else:
                raise errors.unsupported_media_type(content_type)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request("error decoding patch: %s" % exc)
        with self.lock:
            old = self._objects[resource].get(self._key(resource, namespace, name))
            if content_type == APPLY_PATCH:
                if not field_manager:
                    raise errors.bad_request("PATCH %s: fieldManager is required for apply requests" % name)
                if old is None:
                    if isinstance(patch, dict):
                        patch.setdefault("metadata", {}).setdefault("name", name)
                    return self.create(resource, namespace, patch, dry_run=dry_run)
            if old is None:
                raise errors.not_found(resource, name)
            base = copy.deepcopy(old)
            try:
                if content_type == JSON_PATCH:
                    patched = json_patch(base, patch)
                elif content_type == MERGE_PATCH:
                    if not isinstance(patch, dict):
                        raise PatchError("merge patch must be a JSON object", 400)
                    patched = merge_patch(base, patch)
                else:
                    if not isinstance(patch, dict):
                        raise PatchError("strategic merge patch must be a JSON object", 400)
                    patched = strategic_merge_patch(base, patch)
            except PatchError as exc:
                if exc.code == 400:
                    raise errors.bad_request(str(exc))
                raise errors.unprocessable(str(exc))
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch did not produce an object")
            wanted = (patched.get("metadata") or {}).get("resourceVersion")
            obj = self._prepare(resource, namespace, name, patched, old)
            obj["metadata"]["resourceVersion"] = wanted
            return self._commit_update(resource, namespace, name, obj, old, dry_run)

    def delete(self, resource: str, namespace: str | None, name: str, options: dict | None = None, dry_run: bool = False) -> dict:
        if resource not in WRITABLE:
            raise errors.method_not_allowed()
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self._objects[resource].get(key)
            if old is None:
                raise errors.not_found(resource, name)
            pre = (options or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise errors.conflict(resource, name, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                                      % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise errors.conflict(resource, name, "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s"
                                      % (pre["resourceVersion"], old["metadata"]["resourceVersion"]))
            if dry_run:
                return self._deleted_response(resource, old)
            del self._objects[resource][key]
            self._next_rv()
            if resource == "namespaces":
                for sub in ("secrets", "configmaps"):
                    for sub_key in [k for k in self._objects[sub] if k[0] == name]:
                        del self._objects[sub][sub_key]
                        self._notify(sub, name, sub_key[1], None)
            self._notify(resource, namespace, name, None)
            return self._deleted_response(resource, old)

    def _deleted_response(self, resource: str, old: dict) -> dict:
        if resource == "namespaces":
            obj = self._render(resource, old)
            obj["status"] = {"phase": "Terminating"}
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            return obj
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": old["metadata"]["name"], "kind": resource, "uid": old["metadata"]["uid"]}}

    # ---- seeding (bypasses validation of system-owned fields) -----------------------------------
    def put_internal(self, resource: str, obj: dict) -> dict:
        """Store a server-owned object (pods) as is, with fresh system metadata."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta["resourceVersion"] = self._next_rv()
            self._objects[resource][self._key(resource, meta.get("namespace"), meta["name"])] = obj
            self._notify(resource, meta.get("namespace"), meta["name"], obj)
            return copy.deepcopy(obj)
