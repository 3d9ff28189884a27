"""One error shape for the API: {"error": {"code": ..., "message": ..., "request_id": ...}}."""

from rest_framework.views import exception_handler as drf_exception_handler

from audit import context


def exception_handler(exc, ctx):
    response = drf_exception_handler(exc, ctx)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    message = str(detail) if detail is not None else "The request is not valid."
    body = {"error": {"code": code, "message": message, "request_id": context.current().request_id}}
    if detail is None:
        body["error"]["fields"] = response.data
    response.data = body
    return response
