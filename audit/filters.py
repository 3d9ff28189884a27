"""The audit search filters: one FilterSet for the search screen, the CSV/JSON Lines export and the API.

Every text filter refuses NUL, control and invisible formatting characters (bidi overrides included) and
over-long values with a plain form error, before anything reaches the database; numbers are bounded to
what a ``bigint`` holds.  Free text is a case-insensitive substring match over the parameters
(:class:`ContainsText`): served by a trigram index on PostgreSQL (migration audit/0006), a bounded scan in
time order on SQLite.
"""

from __future__ import annotations

import unicodedata

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import F, Lookup, Q
from django_filters.fields import IsoDateTimeField

from audit.access import AuditReader
from audit.actions import Action, ActorType, Result

BIGINT_MAX = 2**63 - 1
#: Fewer characters than this cannot use the trigram index (and match nearly everything anyway).
TEXT_MIN = 3
TEXT_MAX = 200
DATETIME_MAX = 40

NEWEST, OLDEST = "newest", "oldest"

_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def plain_text(value: str) -> None:
    """Refuse control characters, invisible formatting (bidi overrides, zero-width) and unassigned code
    points: no audit value needs them, and they make a search term say something it does not."""
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise ValidationError(
            "Use printable characters only (no control or invisible formatting characters)."
        )


class ContainsText(Lookup):
    """``lhs`` contains the text ``rhs``, ignoring case: ``ILIKE`` on PostgreSQL (which a ``gin_trgm_ops``
    index serves; Django's ``icontains`` compares ``UPPER()``s, which it cannot), ``LIKE`` on SQLite.
    Wildcards in the text are escaped."""

    lookup_name = "contains_text"

    def __init__(self, lhs, text: str):
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        super().__init__(lhs, f"%{escaped}%")

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        if connection.vendor == "postgresql":
            return f"{lhs} ILIKE {rhs}", [*lhs_params, *rhs_params]  # backslash is the default escape
        return f"{lhs} LIKE {rhs} ESCAPE '\\'", [*lhs_params, *rhs_params]


class IdFilter(django_filters.NumberFilter):
    """A database id: a positive integer that fits in a ``bigint``."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(*args, **kwargs)


class PlainIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date and time, refused with a form error when it is long or carries control characters
    (the ISO parser alone lets a trailing NUL through)."""

    def to_python(self, value):
        if isinstance(value, str):
            if len(value) > DATETIME_MAX:
                raise ValidationError("Enter a date and time such as 2026-12-01T09:00.")
            plain_text(value)
        return super().to_python(value)


class TimeFilter(django_filters.IsoDateTimeFilter):
    field_class = PlainIsoDateTimeField


class TextFilter(django_filters.CharFilter):
    def __init__(self, *args, max_length: int, min_length: int | None = None, **kwargs):
        kwargs.setdefault("validators", [plain_text])
        super().__init__(*args, max_length=max_length, min_length=min_length, strip=True, **kwargs)


class AuditSearchForm(forms.Form):
    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            raise ValidationError("The start of the time range must be before its end.")
        return data


class AuditEventFilter(django_filters.FilterSet):
    """Filters over the audit log; the queryset given must already be restricted to what the viewer may
    read.  ``reader`` supplies the tool servers (and the choices the screen offers)."""

    since = TimeFilter(
        field_name="occurred_at", lookup_expr="gte", label="From (UTC)", help_text="e.g. 2026-12-01T09:00"
    )
    until = TimeFilter(field_name="occurred_at", lookup_expr="lt", label="Until (UTC)", help_text="exclusive")
    actor = TextFilter(method="filter_actor", max_length=255, label="Actor", help_text="name or id")
    agent = IdFilter(field_name="agent_id", label="Agent")
    on_behalf_of = IdFilter(field_name="on_behalf_of_id", label="On behalf of")
    capability = TextFilter(method="filter_capability", max_length=128, label="Capability")
    tool_server = IdFilter(method="filter_tool_server", label="Tool server")
    action = django_filters.ChoiceFilter(choices=sorted((v, v) for v in Action.values), label="Action")
    result = django_filters.ChoiceFilter(choices=Result.choices, label="Result")
    request_id = TextFilter(field_name="request_id", max_length=64, label="Request id")
    q = TextFilter(
        method="filter_text",
        min_length=TEXT_MIN,
        max_length=TEXT_MAX,
        label="Text in parameters",
        help_text=f"at least {TEXT_MIN} characters",
    )
    order = django_filters.ChoiceFilter(
        method="filter_order",
        choices=[(NEWEST, "Newest first"), (OLDEST, "Oldest first")],
        empty_label=None,
        label="Sort by time",
    )

    class Meta:
        form = AuditSearchForm
        fields: list[str] = []

    def __init__(self, data=None, queryset=None, *, reader: AuditReader, **kwargs):
        self.reader = reader
        super().__init__(data, queryset, **kwargs)
        self.form.fields["order"].required = False

    @property
    def newest_first(self) -> bool:
        return self.form.cleaned_data.get("order") != OLDEST

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if self.newest_first:
            return queryset.order_by("-occurred_at", "-seq")
        return queryset.order_by("occurred_at", "seq")

    def filter_order(self, queryset, name, value):
        return queryset  # applied last, in filter_queryset, so that every path sorts the same way

    def filter_actor(self, queryset, name, value):
        return queryset.filter(Q(actor_label=value) | Q(actor_id=value))

    def filter_capability(self, queryset, name, value):
        # ``capabilities`` holds sorted keys separated by single spaces.
        return queryset.filter(
            Q(capabilities=value)
            | Q(capabilities__startswith=f"{value} ")
            | Q(capabilities__endswith=f" {value}")
            | Q(capabilities__contains=f" {value} ")
        )

    def filter_tool_server(self, queryset, name, value):
        """Events the tool server took part in: as the actor, as the target, or named as the audience."""
        match = Q(actor_type=ActorType.TOOL_SERVER, actor_id=str(value)) | Q(
            target_type="governance.toolserver", target_id=str(value)
        )
        server = next((s for s in self.reader.tool_servers if s.id == value), None)
        if server is not None and server.audience:
            match |= ContainsText(F("parameters"), f'"audience":"{server.audience}"')
        return queryset.filter(match)

    def filter_text(self, queryset, name, value):
        return queryset.filter(ContainsText(F("parameters"), value))

    def applied(self) -> dict[str, str]:
        """The filters in use, as text (for the export's audit event and file names)."""
        return {key: str(value) for key, value in self.form.cleaned_data.items() if value not in (None, "")}
