"""The two reads behind every token request, as SQL written once instead of compiled by the ORM each time.

Building and compiling these two querysets (joins, ``select_related``, default ordering) cost more CPU than
the database took to answer them.  The SQL below asks the same question and returns the same model
instances, related objects attached as ``select_related`` would:

* :func:`load_client`: the DOT application with its agent or tool server, by ``client_id``;
* :func:`covering_grants_on_audience`: a principal's active grants for the requested capability keys on the
  tool server with this audience in the agent's organization, inside the agent's ceiling;
* :func:`presented_token`: a presented access token's row and record (introspection and every decision).

Nothing is cached: both run on every request, so a suspended agent or a revoked grant counts at once.  The
ORM forms stay the reference (:func:`governance.oauth.scoping.evaluate_request`, the consent page);
``tests/oauth/test_issuance_queries.py`` checks that both give the same answers.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace

from django.db import connections, router
from django.db.models import JSONField, Model
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, set_token_value

from audit.services import append_call, check_appended
from config.db import prepared_cursor
from governance.models import Agent, Capability, Grant, TokenRecord, ToolServer, User


class _Columns:
    """A model's concrete columns under a table alias: the SELECT list, and rows turned into instances."""

    def __init__(self, model: type[Model], alias: str, names: tuple[str, ...] | None = None):
        self.model = model
        # Some columns only (``names``) load a deferred instance, as ``.only()`` gives; from_db() wants
        # them in the model's column order, primary key first.
        fields = model._meta.concrete_fields
        self.fields = (
            fields if names is None else [f for f in fields if f.name in names or f.attname in names]
        )
        self.attnames = [field.attname for field in self.fields]
        self.sql = ", ".join(f'{alias}."{field.column}"' for field in self.fields)
        self._plans: dict[str, list] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def _plan(self, connection) -> list:
        """The ORM's converters for each column read from this database (SQLite dates, JSON, booleans)."""
        plan = self._plans.get(connection.alias)
        if plan is None:
            plan = []
            for index, field in enumerate(self.fields):
                column = field.get_col(self.model._meta.db_table)
                converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
                if converters:
                    plan.append((index, column, converters))
            self._plans[connection.alias] = plan
        return plan

    def load(self, db: str, values) -> Model | None:
        """The instance for this slice of a row (None for the missing side of an outer join)."""
        if values[0] is None:  # the primary key comes first
            return None
        connection = connections[db]
        values = list(values)
        for index, column, converters in self._plan(connection):
            value = values[index]
            for converter in converters:
                value = converter(value, column, connection)
            values[index] = value
        return self.model.from_db(db, self.attnames, values)


def _split(row, parts: list[_Columns], db: str) -> list[Model | None]:
    objects, start = [], 0
    for part in parts:
        objects.append(part.load(db, row[start : start + len(part)]))
        start += len(part)
    return objects


# ---- the client -----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _client_statement() -> tuple[str, list[_Columns]]:
    application, agent, server = (
        _Columns(get_application_model(), "app"),
        _Columns(Agent, "agent"),
        _Columns(ToolServer, "server"),
    )
    # Only column and table names from the models' metadata are formatted in; the client_id is a parameter.
    sql = (
        f"SELECT {application.sql}, {agent.sql}, {server.sql}"  # noqa: S608
        f" FROM {get_application_model()._meta.db_table} app"
        " LEFT JOIN governance_agent agent ON agent.application_id = app.id"
        " LEFT JOIN governance_toolserver server ON server.application_id = app.id"
        " WHERE app.client_id = %s"
        " ORDER BY app.id LIMIT 1"
    )
    return sql, [application, agent, server]


def load_client(client_id: str):
    """The application with this ``client_id`` and its agent or tool server attached, or None.

    Same as ``Application.objects.select_related("agent", "tool_server").filter(client_id=…).first()``:
    ``application.agent`` / ``application.tool_server`` need no further query, and raise ``DoesNotExist``
    when there is none.
    """
    if "\x00" in client_id:  # PostgreSQL cannot hold it, so no client has it (and it is never sent)
        return None
    Application = get_application_model()
    db = router.db_for_read(Application)
    sql, parts = _client_statement()
    with prepared_cursor(connections[db]) as cursor:
        cursor.execute(sql, [client_id])
        row = cursor.fetchone()
    if row is None:
        return None
    application, agent, server = _split(row, parts, db)
    for accessor, principal in (("agent", agent), ("tool_server", server)):
        # select_related's caching: None makes the reverse accessor raise DoesNotExist without a query.
        getattr(Application, accessor).related.set_cached_value(application, principal)
        if principal is not None:
            type(principal).application.field.set_cached_value(principal, application)
    return application


# ---- the grants -----------------------------------------------------------------------------------------
# "An active grant covers this key inside the ceiling", stated once: the tables a covering grant is read
# from, and the conditions it meets.  Both statements below (the broker's and the direct path's) use them.
COVERAGE_TABLES = (
    "governance_grant g"
    " JOIN governance_capability cap ON cap.id = g.capability_id"
    " JOIN governance_toolserver server ON server.id = cap.tool_server_id"
    " JOIN governance_agent_ceiling ceiling ON ceiling.capability_id = cap.id"
)


def coverage_conditions(*, agent: str, organization: str, with_user: bool, keys: int) -> str:
    """SQL conditions on :data:`COVERAGE_TABLES`: a grant of ``agent`` (an SQL expression: a placeholder
    or a column) for the user (a placeholder; else a service grant, no user), active at the ``now``
    placeholder, for one of ``keys`` key placeholders, on the tool server whose audience is the next
    placeholder in ``organization``, and inside the agent's ceiling.

    Parameters, in order: (agent twice, user when ``with_user``, when a placeholder) now, the keys, audience,
    (organization, when a placeholder).
    """
    user_rule = "g.user_id = %s" if with_user else "g.user_id IS NULL"
    placeholders = ", ".join(["%s"] * keys)
    return (
        # The ceiling: the capability must be one this agent may ever hold.
        f"ceiling.agent_id = {agent} AND g.agent_id = {agent} AND {user_rule}"
        # Active (GrantQuerySet.active): not revoked, and open-ended or expiring after now.
        " AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > %s)"
        f" AND cap.key IN ({placeholders})"
        f" AND server.audience = %s AND server.organization_id = {organization}"
    )


@lru_cache(maxsize=2 * 64)
def _grants_statement(keys: int, with_user: bool) -> tuple[str, list[_Columns]]:
    grant, capability = _Columns(Grant, "g"), _Columns(Capability, "cap")
    server = _Columns(ToolServer, "server")
    # Only column names from the models' metadata and placeholders are formatted in; values are parameters.
    conditions = coverage_conditions(agent="%s", organization="%s", with_user=with_user, keys=keys)
    sql = (
        f"SELECT {grant.sql}, {capability.sql}, {server.sql}"  # noqa: S608
        f" FROM {COVERAGE_TABLES} WHERE {conditions}"
        # Grant's default ordering: which grant covers a key never depends on row order.
        " ORDER BY g.created_at DESC"
    )
    return sql, [grant, capability, server]


def covering_grants_on_audience(
    *, agent: Agent, user: User | None, keys: list[str], now: datetime, audience: str
) -> list[Grant]:
    """Active grants of ``agent`` (for ``user``; None: its service grants) for ``keys`` on the tool server
    whose audience is ``audience`` in the agent's organization, inside the agent's ceiling.

    Same rows, in the same order, as ``Grant.objects.active(at=now).filter(agent=agent, user=user,
    capability__key__in=keys, capability__tool_server__audience=audience,
    capability__tool_server__organization_id=agent.organization_id, capability__agents_allowed=agent)
    .select_related("capability__tool_server")``.
    """
    if not keys:
        return []
    db = router.db_for_read(Grant)
    connection = connections[db]
    sql, parts = _grants_statement(len(keys), user is not None)
    params = [agent.pk, agent.pk, *([user.pk] if user is not None else [])]
    params += [connection.ops.adapt_datetimefield_value(now), *keys, audience, agent.organization_id]
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    grants = []
    for row in rows:
        grant, capability, server = _split(row, parts, db)
        Capability.tool_server.field.set_cached_value(capability, server)
        Grant.capability.field.set_cached_value(grant, capability)
        grants.append(grant)
    return grants


# ---- a presented token's record (introspection, decisions) ----------------------------------------------
@lru_cache(maxsize=1)
def _presented_statement() -> tuple[str, list[_Columns]]:
    AccessToken = get_access_token_model()
    token = _Columns(AccessToken, "at", names=("id", "expires"))
    record, agent = _Columns(TokenRecord, "rec"), _Columns(Agent, "agent")
    user, server = _Columns(User, "usr"), _Columns(ToolServer, "server")
    # Only table and column names from the models' metadata are formatted in; the checksum is a parameter.
    sql = (
        f"SELECT {token.sql}, {record.sql}, {agent.sql}, {user.sql}, {server.sql}"  # noqa: S608
        f" FROM {AccessToken._meta.db_table} at"
        f" LEFT JOIN {TokenRecord._meta.db_table} rec ON rec.access_token_id = at.id"
        f" LEFT JOIN {Agent._meta.db_table} agent ON agent.id = rec.agent_id"
        f" LEFT JOIN {User._meta.db_table} usr ON usr.id = rec.user_id"
        f" LEFT JOIN {ToolServer._meta.db_table} server ON server.id = rec.tool_server_id"
        " WHERE at.token_checksum = %s"
        " ORDER BY at.id LIMIT 1"
    )
    return sql, [token, record, agent, user, server]


def presented_token(checksum: str):
    """(DOT's access token with ``id`` and ``expires`` only, its :class:`TokenRecord` with agent, user and
    tool server attached) for this checksum; (None, None) when no token has it.

    Same as ``AccessToken.objects.filter(token_checksum=…).only("pk", "expires").first()`` and then
    ``TokenRecord.objects.select_related("agent", "user", "tool_server").filter(access_token=…).first()``.
    """
    AccessToken = get_access_token_model()
    db = router.db_for_read(AccessToken)
    sql, parts = _presented_statement()
    with prepared_cursor(connections[db]) as cursor:
        cursor.execute(sql, [checksum])
        row = cursor.fetchone()
    if row is None:
        return None, None
    access_token, record, agent, user, server = _split(row, parts, db)
    if record is not None:
        TokenRecord.agent.field.set_cached_value(record, agent)
        TokenRecord.user.field.set_cached_value(record, user)
        TokenRecord.tool_server.field.set_cached_value(record, server)
    return access_token, record


# ---- the token record -----------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _insert_statement(model: type[Model], db: str) -> tuple[list, str]:
    connection = connections[db]
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns})"  # noqa: S608 - model metadata
        f" VALUES ({placeholders}) RETURNING {connection.ops.quote_name(meta.pk.column)}"
    )
    return fields, sql


def insert(obj: Model) -> None:
    """``obj.save()`` for a new row with an auto primary key, through an INSERT built once per model.

    Each value is prepared by its field as the ORM prepares it (``pre_save``, ``get_db_prep_save``); what is
    skipped is compiling the statement again for every token.  No model here listens to save signals.
    """
    model = type(obj)
    db = router.db_for_write(model, instance=obj)
    connection = connections[db]
    if not connection.features.can_return_columns_from_insert:
        obj.save(using=db, force_insert=True)
        return
    fields, sql = _insert_statement(model, db)
    values = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        obj.pk = cursor.fetchone()[0]
    obj._state.adding = False
    obj._state.db = db


# ---- the direct client-credentials path: one read, one write --------------------------------------------
_AGENT_FIELDS = (
    "id",
    "name",
    "organization_id",
    "kind",
    "status",
    "token_endpoint_auth_method",
    "jwks",
    "jwks_uri",
    "dpop_bound_tokens_required",
)
_GRANT_FIELDS = ("id", "expires_at", "capability_id")
_CAPABILITY_FIELDS = (
    "id",
    "key",
    "tool_server_id",
    "max_token_lifetime",
    "requires_approval",
    "requires_step_up",
)
_SERVER_FIELDS = ("id", "audience", "organization_id")


@lru_cache(maxsize=64)
def _direct_statement(keys: int) -> tuple[str, list[_Columns]]:
    Application = get_application_model()
    app = _Columns(Application, "app", ("id", "client_id", "authorization_grant_type"))
    agent = _Columns(Agent, "agent", _AGENT_FIELDS)
    grant = _Columns(Grant, "g", _GRANT_FIELDS)
    capability = _Columns(Capability, "cap", _CAPABILITY_FIELDS)
    server = _Columns(ToolServer, "server", _SERVER_FIELDS)
    # The grants side is the same coverage rule for a background agent (service grants, no user), as an
    # outer join: an agent without a covering grant still comes back, alone.
    conditions = coverage_conditions(
        agent="agent.id", organization="agent.organization_id", with_user=False, keys=keys
    )
    sql = (
        f"SELECT {app.sql}, {agent.sql}, {grant.sql}, {capability.sql}, {server.sql}"  # noqa: S608
        f" FROM {Application._meta.db_table} app"
        " JOIN governance_agent agent ON agent.application_id = app.id"
        f" LEFT JOIN ({COVERAGE_TABLES}) ON {conditions}"
        " WHERE app.client_id = %s"
        " ORDER BY g.created_at DESC"
    )
    return sql, [app, agent, grant, capability, server]


def background_agent_with_grants(*, client_id: str, keys: list[str], audience: str, now: datetime):
    """(application, agent, [grant, ...]) for a client-credentials request, in one query; None when the
    ``client_id`` is not an agent's.

    The agent carries only the columns the token endpoint reads (a deferred instance, as ``.only()`` gives),
    with its application attached; each grant carries its capability and the capability its tool server.
    The grants are :func:`covering_grants_on_audience`'s for a background agent, in the same order.
    """
    if "\x00" in client_id or not keys:
        return None
    db = router.db_for_read(Grant)
    connection = connections[db]
    sql, parts = _direct_statement(len(keys))
    params = [connection.ops.adapt_datetimefield_value(now), *keys, audience, client_id]
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return None
    application, agent = None, None
    grants = []
    for row in rows:
        objects = _split(row, parts, db)
        if agent is None:
            application, agent = objects[0], objects[1]
            Agent.application.field.set_cached_value(agent, application)
        grant, capability, server = objects[2:]
        if grant is not None:
            Capability.tool_server.field.set_cached_value(capability, server)
            Grant.capability.field.set_cached_value(grant, capability)
            grants.append(grant)
    return application, agent, grants


@lru_cache(maxsize=4)
def _issued_statement(db: str) -> tuple[list, list, str]:
    """``WITH at AS (INSERT token), tr AS (INSERT record, at's id) SELECT … FROM audit_append(…)``,
    with the access token's and the record's fields in the order of their placeholders."""
    connection = connections[db]
    quote = connection.ops.quote_name
    AccessToken = get_access_token_model()
    token_fields, token_sql = _insert_statement(AccessToken, db)
    link = TokenRecord._meta.get_field("access_token")
    record_fields = [f for f in TokenRecord._meta.concrete_fields if f not in (TokenRecord._meta.pk, link)]
    columns = ", ".join(quote(f.column) for f in [link, *record_fields])
    placeholders = ", ".join(["%s"] * len(record_fields))
    # VALUES, as in the access token's INSERT, so that each parameter takes its column's type.
    sql = (
        f"WITH at AS ({token_sql}),"  # noqa: S608 - model metadata and placeholders only
        f" tr AS (INSERT INTO {quote(TokenRecord._meta.db_table)} ({columns})"
        f" VALUES ((SELECT {quote(AccessToken._meta.pk.column)} FROM at), {placeholders})) "
    )
    return token_fields, record_fields, sql


def stored_token_value(token: str) -> dict:
    """The ``token`` and ``token_checksum`` columns DOT stores for ``token`` (its own functions decide:
    with RFC 9700 token storage on, an empty ``token`` and the SHA-256 checksum)."""
    AccessToken = get_access_token_model()
    holder = SimpleNamespace(token="", token_checksum="", _raw_token=None)
    set_token_value(holder, token)
    checksum = AccessToken._meta.get_field("token_checksum").pre_save(holder, True)
    return {"token": holder.token, "token_checksum": checksum}


_AS_IS = (str, int, bool, type(None))


def _prepared(field, value, connection):
    """``field.get_db_prep_save(value)``: a str, int, bool or None goes unchanged into a text, integer,
    boolean or key column, as the field would pass it; dates and every JSON value go through the field."""
    if type(value) in _AS_IS and not isinstance(field, JSONField):
        return value
    return field.get_db_prep_save(value, connection)


def insert_issued(token_columns: dict, record_columns: dict, event_values: dict, *, using: str) -> None:
    """Store an issued token in one statement (PostgreSQL, autocommit: its own transaction): DOT's access
    token row, the :class:`TokenRecord` pointing at it, and the audit event, all or none.

    Columns are given by attribute name; each value is prepared by its field as ``save()`` prepares it
    (``created``/``updated`` are set here, as ``auto_now`` would).  A column missing from either mapping
    is an error, not a default.  The event's hash is checked after the statement
    (``audit.services.check_appended``); if it ever failed, the token would not be handed out and
    ``audit_verify`` would name the event.
    """
    connection = connections[using]
    token_fields, record_fields, prefix = _issued_statement(using)
    now = timezone.now()
    token_columns = {"created": now, "updated": now, **token_columns}
    append_sql, append_params = append_call(event_values)
    params = [_prepared(f, token_columns[f.attname], connection) for f in token_fields]
    params += [_prepared(f, record_columns[f.attname], connection) for f in record_fields]
    with prepared_cursor(connection) as cursor:
        cursor.execute(prefix + append_sql, params + append_params)
        row = cursor.fetchone()
    check_appended(event_values, row)
