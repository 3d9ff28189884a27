"""The audit log in the admin: read-only, organization-scoped, and fast on millions of rows.

The changelist never runs an unbounded ``COUNT(*)``: :class:`EstimatingPaginator` reads the exact total of
an unfiltered list from the heads of the lanes (positions within a lane have no gaps; the global ``seq``
may), counts a filtered list only up to a bound, and past that bound asks PostgreSQL's planner for an
estimate, shown as "about N".
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property
from django.utils.html import format_html

from audit.access import READ_PERMISSION
from audit.actions import Action
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import event_count

#: A filtered list is counted exactly up to this many rows; beyond it the count is an estimate.
EXACT_COUNT_LIMIT = 10_000


def can_read_audit(user) -> bool:
    """Active staff holding :data:`READ_PERMISSION` (superusers hold every permission)."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    return user.has_perm(READ_PERMISSION)


def planner_estimate(queryset) -> int | None:
    """PostgreSQL's row estimate for the query, without running it; None on other databases."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatingPaginator(Paginator):
    """A paginator whose count is exact when cheap and an estimate otherwise (``count_is_estimate``)."""

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            # Append-only, and gap-free within each lane: the lanes' heads add up to the number of events.
            return event_count(using=queryset.db)
        bounded = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        if bounded <= EXACT_COUNT_LIMIT:
            return bounded
        self.count_is_estimate = True
        estimate = planner_estimate(queryset)
        return max(bounded, estimate or 0)


class ActionListFilter(admin.ChoicesFieldListFilter):
    """Filter by action with the dotted names of :class:`Action` (the field itself has no choices, so that a
    new action needs no migration), without the ``SELECT DISTINCT`` a plain field filter would run."""

    def choices(self, changelist):
        yield {
            "selected": self.lookup_val is None,
            "query_string": changelist.get_query_string(remove=[self.lookup_kwarg, self.lookup_kwarg_isnull]),
            "display": "All",
        }
        for value in sorted(Action.values):
            yield {
                "selected": self.lookup_val is not None and value in self.lookup_val,
                "query_string": changelist.get_query_string(
                    {self.lookup_kwarg: value}, [self.lookup_kwarg_isnull]
                ),
                "display": value,
            }


class ReadOnlyAuditAdmin(admin.ModelAdmin):
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = None

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        user = request.user
        return queryset if user.is_superuser else queryset.filter(organization_id=user.organization_id)

    def has_module_permission(self, request):
        return can_read_audit(request.user)

    def has_view_permission(self, request, obj=None):
        return can_read_audit(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAuditAdmin):
    paginator = EstimatingPaginator
    list_per_page = 100
    list_display = (
        "seq",
        "occurred_at",
        "action_name",
        "result",
        "actor_name",
        "agent_name",
        "on_behalf_of_name",
        "target",
        "capabilities",
    )
    list_display_links = ("seq", "action_name")
    list_filter = (("action", ActionListFilter), "result", "occurred_at", "actor_type")
    sortable_by = ("seq", "occurred_at")
    search_fields = ("=request_id", "actor_label", "agent_label", "on_behalf_of_label", "target_label")
    search_help_text = "A request id (exact), or part of an actor, agent, user or target name."
    fieldsets = (
        (None, {"fields": ("seq", "occurred_at", "action_name", "result")}),
        ("Who", {"fields": ("actor", "organization_id", "agent", "on_behalf_of", "request_id", "client_ip")}),
        ("What", {"fields": ("target", "capabilities", "pretty_parameters")}),
        ("Chain", {"fields": ("lane", "lane_seq", "prev_hash", "hash"), "classes": ("collapse",)}),
    )

    @admin.display(description="action", ordering="action")
    def action_name(self, event):
        return event.action  # the stable dotted name auditors search for, not its label

    @admin.display(description="actor")
    def actor_name(self, event):
        return event.actor_label

    @admin.display(description="agent")
    def agent_name(self, event):
        return event.agent_label

    @admin.display(description="on behalf of")
    def on_behalf_of_name(self, event):
        return event.on_behalf_of_label

    @admin.display(description="actor")
    def actor(self, event):
        return f"{event.actor_type} #{event.actor_id} {event.actor_label}".replace(" # ", " ")

    @admin.display(description="agent")
    def agent(self, event):
        return f"{event.agent_label} (#{event.agent_id})" if event.agent_id else "—"

    @admin.display(description="on behalf of")
    def on_behalf_of(self, event):
        return f"{event.on_behalf_of_label} (#{event.on_behalf_of_id})" if event.on_behalf_of_id else "—"

    @admin.display(description="target")
    def target(self, event):
        if not event.target_type:
            return "—"
        return f"{event.target_type} #{event.target_id} {event.target_label}"

    @admin.display(description="parameters")
    def pretty_parameters(self, event):
        try:
            value = json.loads(event.parameters)
        except ValueError:
            return event.parameters
        return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAuditAdmin):
    list_display = ("events", "seq", "created_at", "key_id", "signature")
    fields = ("events", "seq", "heads", "created_at", "key_id", "signature")

    def get_queryset(self, request):
        # Checkpoints cover the whole chain; only a superuser sees them (they name no organization).
        queryset = super(ReadOnlyAuditAdmin, self).get_queryset(request)
        return queryset if request.user.is_superuser else queryset.none()

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser
