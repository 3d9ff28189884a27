"""Forms of the portal's pages: parsing and choices only (choices come from the viewer's selectors)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.utils import timezone

from governance import selectors
from governance.models import Agent, User
from governance.models.agents import AgentKind

EXPIRY_PRESETS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("1 hour", timedelta(hours=1)),
    "1d": ("1 day", timedelta(days=1)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
    "90d": ("90 days", timedelta(days=90)),
    "never": ("No expiry", None),
}


def expiry_from_preset(preset: str, *, now: datetime | None = None) -> datetime | None:
    delta = EXPIRY_PRESETS[preset][1]
    return None if delta is None else (now or timezone.now()) + delta


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000, widget=forms.Textarea(attrs={"rows": 3}), help_text="Recorded in the audit log."
    )


class OptionalReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional; recorded in the audit log.",
    )


class ChooseAgentForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.none(), empty_label="Choose an agent")

    def __init__(self, *args, viewer: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = (
            selectors.agents_visible_to(viewer).exclude(status="retired").order_by("name")
        )


class GrantForm(forms.Form):
    """Grant one or more capabilities of the agent's ceiling to one user (no user for a background agent)."""

    user = forms.ModelChoiceField(queryset=User.objects.none(), required=False, empty_label="Choose a person")
    capabilities = forms.ModelMultipleChoiceField(
        queryset=None, widget=forms.CheckboxSelectMultiple, error_messages={"required": "Pick at least one."}
    )
    expiry = forms.ChoiceField(
        choices=[(key, label) for key, (label, _) in EXPIRY_PRESETS.items()],
        initial="30d",
        widget=forms.RadioSelect,
    )
    reason = forms.CharField(
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why this person's agent needs it; recorded in the audit log.",
    )

    def __init__(self, *args, viewer: User, agent: Agent, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent = agent
        self.fields["capabilities"].queryset = agent.ceiling.select_related("tool_server").order_by(
            "tool_server__name", "key"
        )
        if agent.kind == AgentKind.BACKGROUND:
            del self.fields["user"]
        else:
            self.fields["user"].required = True
            self.fields["user"].queryset = (
                selectors.users_visible_to(viewer)
                .filter(is_active=True, organization_id=agent.organization_id)
                .order_by("username")
            )

    @property
    def expires_at(self) -> datetime | None:
        return expiry_from_preset(self.cleaned_data["expiry"])


class CeilingForm(forms.Form):
    capabilities = forms.ModelMultipleChoiceField(
        queryset=None, required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, viewer: User, agent: Agent, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["capabilities"].queryset = (
            selectors.capabilities_visible_to(viewer)
            .filter(tool_server__organization_id=agent.organization_id)
            .order_by("tool_server__name", "key")
        )
