"""Kubernetes `Status` failures, with the reasons and messages a real API server uses."""

from __future__ import annotations


class ApiError(Exception):
    """Rendered as a `Status` object with HTTP status `code`; the client raises ApiException."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(resource: str, name: str | None, causes: list | None = None) -> dict:
    details = {"kind": resource}
    if name:
        details["name"] = name
    if causes:
        details["causes"] = causes
    return details


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", '%s "%s" not found' % (resource, name), _details(resource, name))


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (resource, name), _details(resource, name))


def conflict(resource: str, name: str, why: str = "the object has been modified; please apply your changes to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s' % (resource, name, why), _details(resource, name))


def invalid(kind: str, resource: str, name: str, field: str, why: str) -> ApiError:
    causes = [{"reason": "FieldValueInvalid", "message": why, "field": field}]
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s: %s' % (kind, name, field, why), _details(resource, name, causes))


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "UnprocessableEntity", message, None)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message, None)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized", None)


def forbidden(user: str, verb: str, resource: str, subresource: str | None, namespace: str | None, name: str | None) -> ApiError:
    full = resource + ("/" + subresource if subresource else "")
    where = 'in the namespace "%s"' % namespace if namespace else "at the cluster scope"
    subject = '%s "%s"' % (resource, name) if name else resource
    message = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "" %s' % (subject, user, verb, full, where)
    return ApiError(403, "Forbidden", message, _details(resource, name))


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format (%s) - accepted media types include: application/json-patch+json, "
                    "application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json" % content_type, {})
