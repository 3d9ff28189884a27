"""``require_step_up``: sensitive portal views and admin actions need a fresh second factor.

A request whose session lacks the MFA level within ``max_age`` seconds (default
``GATEHOUSE_STEP_UP_MAX_AGE_SECONDS``) is not served:

* a GET (or HEAD) is redirected to the verification page with ``next`` set to come back, or to enrolment
  when the person has no confirmed device yet;
* any other method is refused with 403 and a plain sentence (a form post is never replayed after a redirect);
* an admin action is refused with a message and the person is sent to verify, then back to the list.

Every refusal records ``step_up.required`` in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from governance import auth_levels
from governance.services.mfa import has_confirmed_device, step_up_require

REFUSAL = "This action needs a fresh second factor. Enter a code from your authenticator app, then try again."
NO_DEVICE = "This action needs a second factor. Set up an authenticator app first, then try again."


def _with_next(url_name: str, next_url: str) -> str:
    return f"{reverse(url_name)}?{urlencode({'next': next_url})}"


def verify_url(next_url: str) -> str:
    return _with_next("governance:mfa_verify", next_url)


def enrol_url(next_url: str) -> str:
    return _with_next("governance:mfa_enrol", next_url)


def is_fresh(request: HttpRequest, max_age: int | None = None) -> bool:
    age = auth_levels.step_up_max_age() if max_age is None else max_age
    return auth_levels.satisfies(request, acr=auth_levels.ACR_MFA, max_age=age)


def _demand(request: HttpRequest, max_age: int | None, required_for: str) -> bool:
    """Record the demand; return whether the person has a device to verify with."""
    age = auth_levels.step_up_max_age() if max_age is None else max_age
    step_up_require(
        actor=request.user,
        required_for=required_for,
        acr=auth_levels.ACR_MFA,
        max_age=age,
        current_acr=auth_levels.current_acr(request),
    )
    return has_confirmed_device(request.user)


def _safe_referer(request: HttpRequest) -> str:
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referer
    return ""


def step_up_response(request: HttpRequest, *, max_age: int | None = None) -> HttpResponse | None:
    """None when the session has a fresh second factor; otherwise the redirect or refusal to send."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if is_fresh(request, max_age):
        return None
    has_device = _demand(request, max_age, request.path)
    if request.method in ("GET", "HEAD"):
        next_url = request.get_full_path()
        return HttpResponseRedirect(verify_url(next_url) if has_device else enrol_url(next_url))
    # A refused form post is not replayed: after verifying, the person returns to the page that held the form.
    next_url = _safe_referer(request) or reverse("governance:home")
    return TemplateResponse(
        request,
        "governance/mfa/step_up_required.html",
        {
            "sentence": REFUSAL if has_device else NO_DEVICE,
            "action_url": verify_url(next_url) if has_device else enrol_url(next_url),
            "has_device": has_device,
        },
        status=403,
    )


def prompt_for(
    request: HttpRequest, requirement: auth_levels.Requirement, *, next_url: str | None = None
) -> HttpResponse | None:
    """For the authorization endpoint (RFC 9470 §4 ``acr_values``/``max_age``, or what capabilities need):
    None when the session meets ``requirement``; else a redirect that re-prompts and comes back here.

    The MFA level, or any level that is merely too old, is proved again with a code when the person has a
    device; a stale password-only session without a device signs in again.  ``next_url`` (default: this
    request's URL) is where the person comes back to, e.g. the GET form of a posted consent.
    """
    next_url = next_url or request.get_full_path()
    if not request.user.is_authenticated:
        return redirect_to_login(next_url)
    if auth_levels.satisfies(request, acr=requirement.acr, max_age=requirement.max_age):
        return None
    step_up_require(
        actor=request.user,
        required_for=request.path,
        acr=requirement.acr,
        max_age=requirement.max_age,
        current_acr=auth_levels.current_acr(request),
    )
    if has_confirmed_device(request.user):
        return HttpResponseRedirect(verify_url(next_url))
    if requirement.acr == auth_levels.ACR_MFA:
        return HttpResponseRedirect(enrol_url(next_url))
    return redirect_to_login(next_url)


def require_step_up(max_age: int | None | Callable = None):
    """Decorator for views: ``@require_step_up()``, ``@require_step_up(max_age=60)`` or bare."""
    if callable(max_age):
        return require_step_up()(max_age)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            refusal = step_up_response(request, max_age=max_age)
            return refusal if refusal is not None else view(request, *args, **kwargs)

        return wrapper

    return decorator


class StepUpRequiredMixin:
    """Class-based views: put it first in the bases; ``step_up_max_age`` overrides the default window."""

    step_up_max_age: int | None = None

    def dispatch(self, request, *args, **kwargs):
        refusal = step_up_response(request, max_age=self.step_up_max_age)
        return refusal if refusal is not None else super().dispatch(request, *args, **kwargs)


def step_up_refusal_for_admin(
    request: HttpRequest, *, what: str, max_age: int | None = None
) -> HttpResponse | None:
    """For admin actions and admin forms: None when fresh; else a message and a redirect to verify.

    The person comes back to the page they were on and runs the action again: nothing is replayed.
    """
    if is_fresh(request, max_age):
        return None
    has_device = _demand(request, max_age, f"admin: {what}")
    back = request.get_full_path()
    if has_device:
        messages.error(request, f"{what} needs a fresh second factor. Enter a code, then run it again.")
        return HttpResponseRedirect(verify_url(back))
    messages.error(request, f"{what} needs a second factor. Set up an authenticator app, then run it again.")
    return HttpResponseRedirect(enrol_url(back))


def require_step_up_action(what: str, max_age: int | None = None):
    """Decorator for Django admin actions ``(modeladmin, request, queryset)``."""

    def decorator(action: Callable) -> Callable:
        @wraps(action)
        def wrapper(modeladmin, request, queryset):
            # Nothing selected that this admin may see: nothing will change, so nothing to prove.
            if queryset.exists():
                refusal = step_up_refusal_for_admin(request, what=what, max_age=max_age)
                if refusal is not None:
                    return refusal
            return action(modeladmin, request, queryset)

        return wrapper

    return decorator


def high_risk_grant_refusal(request: HttpRequest, capability_id: str | None) -> HttpResponse | None:
    """For the admin's grant form: posting a grant of a high or critical capability needs a fresh factor.

    Looks only at capabilities the admin may see; anything else is left to the form's own validation.
    """
    from governance import selectors

    if not capability_id or not str(capability_id).isdigit():
        return None
    capability = selectors.capabilities_visible_to(request.user).filter(pk=int(capability_id)).first()
    if capability is None or not auth_levels.granting_needs_step_up(capability):
        return None
    what = f"Granting {capability.key} (risk {capability.risk_level})"
    return step_up_refusal_for_admin(request, what=what)


def ensure_fresh_for_grant(request: HttpRequest, capability) -> None:
    """Backstop inside the admin's save: refuse a high-risk grant without a fresh second factor."""
    from governance.errors import NotPermitted

    if auth_levels.granting_needs_step_up(capability) and not is_fresh(request):
        raise NotPermitted(
            f"Granting {capability.key} needs a fresh second factor. Enter a code at "
            f"{reverse('governance:mfa_verify')}, then save again."
        )
