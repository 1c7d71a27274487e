"""The three PATCH flavours the API server accepts for built-in objects.

* JSON merge patch (RFC 7386, ``application/merge-patch+json``);
* strategic merge patch (``application/strategic-merge-patch+json``): a merge patch that also
  understands the ``$patch`` (replace/delete), ``$retainKeys`` and ``$deleteFromPrimitiveList``
  directives and merges the few lists of Secrets/ConfigMaps/Namespaces that have a patch strategy
  (``metadata.finalizers`` as a set, ``metadata.ownerReferences`` keyed by ``uid``); every other
  list is replaced, as the API server does for lists without a merge strategy;
* JSON patch (RFC 6902, ``application/json-patch+json``).
"""

from __future__ import annotations

import copy

_MERGE_KEYS = {"ownerReferences": "uid"}
_SET_LISTS = {"finalizers"}


class PatchError(ValueError):
    """A patch that cannot be applied; ``code`` is the HTTP status the API server answers."""

    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.code = code


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target, patch, _key=None):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive is not None and directive != "merge":
        raise PatchError("unknown $patch directive %r" % directive, 400)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.pop("$retainKeys", None)
    for key in [k for k in patch if k.startswith("$deleteFromPrimitiveList/")]:
        name = key.split("/", 1)[1]
        drop = patch.pop(key) or []
        if isinstance(result.get(name), list):
            result[name] = [v for v in result[name] if v not in drop]
    for key in [k for k in patch if k.startswith("$")]:
        patch.pop(key)  # $setElementOrder/... only orders lists; order is irrelevant here
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _SET_LISTS and isinstance(result.get(key), list):
            result[key] = result[key] + [v for v in value if v not in result[key]]
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_keyed_list(current: list, patch: list, merge_key: str) -> list:
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError("list items need the merge key %r" % merge_key, 400)
        index = next((i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("invalid JSON pointer %r" % path, 400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError("invalid array index %r" % token)
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError("array index %d out of range" % index)
    return index


def _parent(doc, tokens: list, path: str):
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, False)]
        else:
            raise PatchError("doc is missing path: %s" % path)
    return current


def _get(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("doc is missing path: %s" % path)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError("doc is missing path: %s" % path)


def _remove(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("unable to remove nonexistent key: %s: missing value" % last)
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, False))
    raise PatchError("doc is missing path: %s" % path)


def _add(doc, path: str, value, replace: bool = False):
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError("replace operation does not apply: doc is missing key: %s" % path)
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, False)] = copy.deepcopy(value)
        else:
            parent.insert(_index(parent, last, True), copy.deepcopy(value))
    else:
        raise PatchError("doc is missing path: %s" % path)
    return doc


def json_patch(target, operations):
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", 400)
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError("invalid json patch operation %r" % (operation,), 400)
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError("%s operation needs a value" % op, 400)
        if op == "add":
            doc = _add(doc, path, operation["value"])
        elif op == "replace":
            doc = _add(doc, path, operation["value"], replace=True)
        elif op == "remove":
            _remove(doc, path)
        elif op == "test":
            if _get(doc, path) != operation["value"]:
                raise PatchError("testing value %s failed: test failed" % path)
        elif op in ("move", "copy"):
            if "from" not in operation:
                raise PatchError("%s operation needs 'from'" % op, 400)
            value = _remove(doc, operation["from"]) if op == "move" else copy.deepcopy(_get(doc, operation["from"]))
            doc = _add(doc, path, value)
        else:
            raise PatchError("unexpected json patch operation %r" % op, 400)
    return doc
