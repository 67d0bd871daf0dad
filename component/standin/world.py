"""The stand-in PagerDuty's account: incidents with their notes and alerts, and the
services, users, priorities and escalation policy they refer to, kept consistent.

``PagerDutyWorld.handle(method, path, query, body, requester)`` answers as PagerDuty's
REST API does, ``(status, body)``: incidents created, listed (with the ``statuses[]``,
``urgencies[]``, ``service_ids[]``, ``user_ids[]`` and ``incident_key`` filters, offset
pagination, ``total``), read, updated (one or several), merged and snoozed, 404 for an
id nobody created, 400 with PagerDuty's error shape for what it refuses (a create
without a ``From`` requester, a snooze of an incident not acknowledged, a change to a
resolved one); notes and alerts per incident; services, users and priorities. Every
other request of an action in the manifest is answered with that action's example from
PagerDuty's OpenAPI document, so any flow runs against it.

With ``autocreate`` (the programmatic default: tests and benchmarks deliver events
about incidents nobody created), reading or noting an unknown incident makes it; such
incidents are not listed, so a listing shows what was made on purpose. ``pdc mock``
turns it off, so a flow about a missing incident fails as it would against PagerDuty.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import count
from typing import Any

Answer = tuple[int, Any]
ACCOUNT = "https://acme.pagerduty.com"
API = "https://api.pagerduty.com"

SERVICES = {"PSVC001": "Checkout API", "PSVC002": "Payments"}
USERS = {
    "PUSR001": ("Jane Doe", "jane.doe@example.com"),
    "PUSR002": ("Sam Lee", "sam.lee@example.com"),
}
PRIORITIES = {"PPRI001": "P1", "PPRI002": "P2", "PPRI003": "P3"}
POLICY = ("PEP0001", "Default escalation policy")
# The incident the README's quickstart delivers an event about.
README_INCIDENT = ("Q1P5", "Server is on fire")
STATUSES = ("triggered", "acknowledged", "resolved")
URGENCIES = ("high", "low")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reference(kind: str, item_id: str, summary: str) -> dict[str, Any]:
    """A PagerDuty reference (``service_reference``, ``user_reference``, ...)."""
    plural = {"escalation_policy": "escalation_policies", "priority": "priorities"}
    path = plural.get(kind, f"{kind}s")
    return {
        "id": item_id,
        "type": f"{kind}_reference",
        "summary": summary,
        "self": f"{API}/{path}/{item_id}",
        "html_url": f"{ACCOUNT}/{path}/{item_id}",
    }


def error(status: int, message: str, *errors: str, code: int = 2001) -> Answer:
    """PagerDuty's error body."""
    return status, {"error": {"message": message, "code": code, "errors": list(errors)}}


NOT_FOUND = error(404, "Not Found", code=2100)


def invalid(*errors: str) -> Answer:
    """PagerDuty's 400 for input it refuses, with what was wrong."""
    return error(400, "Invalid Input Provided", *errors)


def _item(kind: str, item_id: str, name: str, **fields: Any) -> dict[str, Any]:
    """A whole user, service or priority: its reference, its type and name, and more."""
    return {**reference(kind, item_id, name), "type": kind, "name": name, **fields}


def _user(user_id: str) -> dict[str, Any]:
    name, email = USERS[user_id]
    return _item("user", user_id, name, email=email, time_zone="Europe/London", role="admin")


def _service(service_id: str) -> dict[str, Any]:
    name = SERVICES[service_id]
    return _item(
        "service",
        service_id,
        name,
        description=f"{name}, as the stand-in has it",
        status="active",
        escalation_policy=reference("escalation_policy", *POLICY),
        created_at="2026-01-01T00:00:00Z",
        alert_creation="create_alerts_and_incidents",
    )


def _priority(priority_id: str) -> dict[str, Any]:
    return _item("priority", priority_id, PRIORITIES[priority_id], description="")


def _page(items: list[Any], key: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """Offset pagination, as PagerDuty's list endpoints answer it."""
    try:
        limit = max(1, min(int(query.get("limit", ["25"])[-1]), 100))
        offset = max(0, int(query.get("offset", ["0"])[-1]))
    except ValueError:
        limit, offset = 25, 0
    page = items[offset : offset + limit]
    total = len(items) if query.get("total") == ["true"] else None
    more = offset + len(page) < len(items)
    return {key: page, "limit": limit, "offset": offset, "more": more, "total": total}


# The success status PagerDuty's OpenAPI document gives a request, where it is not the
# usual one (GET and PUT 200, POST 201, DELETE 204); tests/component/test_standin.py
# checks each against the document.
DOCUMENTED = {
    ("POST", "/incidents/{id}/notes"): 200,
    ("POST", "/incidents/{id}/responder_requests"): 200,
    ("POST", "/incidents/{id}/status_updates"): 200,
    ("POST", "/templates/{id}/render"): 200,
    ("POST", "/webhook_subscriptions/{id}/enable"): 200,
    ("POST", "/webhook_subscriptions/{id}/ping"): 202,
}


def success(method: str, template: str) -> int:
    """The status PagerDuty's document gives a successful ``method`` on ``template``."""
    usual = {"POST": 201, "DELETE": 204}.get(method, 200)
    return DOCUMENTED.get((method, template), usual)


@cache
def _examples() -> list[tuple[str, re.Pattern[str], int, Any]]:
    """Each action's request (method, path as a pattern) and PagerDuty's example answer."""
    from pagerduty_connector.component.catalog import catalog

    found = []
    for action in catalog()["actions"]:
        request, example = action.get("request"), action.get("examplePayload")
        if not request or not isinstance(example, dict):
            continue
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(request["path"]))
        status = success(request["method"], request["path"])
        data = None if status == 204 else example.get("data")
        found.append((request["method"], re.compile(f"^{pattern}$"), status, data))
    return found


class PagerDutyWorld:
    """One PagerDuty account, in memory (callers hold the server's lock)."""

    def __init__(self, generated: int = 0, *, autocreate: bool = True) -> None:
        self.autocreate = autocreate
        self.numbers = count(1)
        self.ids = count(1)
        self.incidents: dict[str, dict[str, Any]] = {}  # listed, in creation order
        self.unlisted: dict[str, dict[str, Any]] = {}  # made by ``autocreate``
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        self.version = 0  # moves on every change: list pages are cached per version
        if not autocreate:
            self._make(README_INCIDENT[0], README_INCIDENT[1], listed=True)
        for n in range(generated):
            urgency = "high" if n % 3 else "low"
            title = f"Disk is {n % 100}% full on db-{n % 7}"
            self._make(f"Q{n:012d}", title, listed=True, urgency=urgency, quiet=True)

    # -- incidents ---------------------------------------------------------------------

    def _make(
        self,
        incident_id: str,
        title: str,
        *,
        listed: bool,
        urgency: str = "high",
        service: str = "PSVC001",
        quiet: bool = False,
        key: str | None = None,
        body: str | None = None,
    ) -> dict[str, Any]:
        number = next(self.numbers)
        at = "2026-11-24T10:00:00Z" if quiet else _now()
        assignee = "PUSR001" if number % 2 else "PUSR002"
        incident = {
            **reference("incident", incident_id, f"[#{number}] {title}"),
            "type": "incident",
            "incident_number": number,
            "title": title,
            "description": title,
            "created_at": at,
            "updated_at": at,
            "status": "triggered",
            "incident_key": key or f"key-{incident_id}",
            "service": reference("service", service, SERVICES[service]),
            "assignments": [
                {"at": at, "assignee": reference("user", assignee, USERS[assignee][0])}
            ],
            "acknowledgements": [],
            "last_status_change_at": at,
            "urgency": urgency,
            "escalation_policy": reference("escalation_policy", *POLICY),
            "teams": [],
            "pending_actions": [],
            "alert_counts": {"all": 1, "triggered": 1, "resolved": 0},
        }
        if body:
            incident["body"] = {"type": "incident_body", "details": body}
        (self.incidents if listed else self.unlisted)[incident_id] = incident
        alert_id = f"A{incident_id}"
        self.alerts[incident_id] = [
            {
                **reference("alert", alert_id, title),
                "type": "alert",
                "created_at": at,
                "status": "triggered",
                "alert_key": incident["incident_key"],
                "service": incident["service"],
                "incident": reference("incident", incident_id, title),
                "severity": "critical",
                "suppressed": False,
                "body": {"type": "alert_body", "contexts": [], "details": {}},
            }
        ]
        self.notes[incident_id] = []
        self.version += 1
        return incident

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """The incident, made first if ``autocreate`` and nobody made it."""
        found = self.incidents.get(incident_id) or self.unlisted.get(incident_id)
        if found is None and self.autocreate:
            found = self._make(incident_id, "Server is on fire", listed=False)
        return found

    def _listed(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = list(self.incidents.values())
        for name, field, inner in (
            ("statuses[]", "status", None),
            ("urgencies[]", "urgency", None),
            ("service_ids[]", "service", "id"),
            ("incident_key", "incident_key", None),
        ):
            wanted = set(query.get(name, []))
            if wanted:
                found = [i for i in found if (i[field][inner] if inner else i[field]) in wanted]
        users = set(query.get("user_ids[]", []))
        if users:
            found = [i for i in found if {a["assignee"]["id"] for a in i["assignments"]} & users]
        return found

    def _create(self, body: Any, requester: str | None) -> Answer:
        if not requester:
            return invalid("A From header is required.")
        given = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(given, dict) or given.get("type") != "incident":
            return invalid("incident.type must be 'incident'.")
        title = given.get("title")
        service = (given.get("service") or {}).get("id")
        if not isinstance(title, str) or not title.strip():
            return invalid("Incident title can't be blank.")
        if service not in SERVICES:
            return invalid("Service not found.")
        urgency = given.get("urgency") or "high"
        if urgency not in URGENCIES:
            return invalid("Urgency must be high or low.")
        key = given.get("incident_key")
        if key and any(i["incident_key"] == key for i in self.incidents.values()):
            # PagerDuty's deduplication: an open incident with the key is answered.
            return error(
                400,
                "Open incident with matching dedup key already exists on this service",
                code=2001,
            )
        details = (given.get("body") or {}).get("details")
        made = self._make(
            f"PINC{next(self.ids):04d}",
            title.strip(),
            listed=True,
            urgency=urgency,
            service=service,
            key=key,
            body=details,
        )
        priority = (given.get("priority") or {}).get("id")
        if priority in PRIORITIES:
            made["priority"] = reference("priority", priority, PRIORITIES[priority])
        return 201, {"incident": made}

    def _update(self, incident: dict[str, Any], given: Any, requester: str | None) -> Answer | None:
        """Apply one incident's changes; an error answer, or None when applied."""
        if not requester:
            return invalid("A From header is required.")
        if not isinstance(given, dict):
            return invalid("incident must be an object.")
        if incident["status"] == "resolved" and given.get("status") != "resolved":
            return error(400, "Incident Already Resolved", code=2002)
        status = given.get("status")
        if status is not None and status not in ("acknowledged", "resolved"):
            return invalid("status must be acknowledged or resolved.")
        urgency = given.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            return invalid("Urgency must be high or low.")
        priority = given.get("priority")
        if (
            priority is not None
            and (priority.get("id") if isinstance(priority, dict) else None) not in PRIORITIES
        ):
            return invalid("Priority not found.")
        at = _now()
        if status and status != incident["status"]:
            incident["status"] = status
            incident["last_status_change_at"] = at
            if status == "acknowledged":
                who = self._requester_id(requester)
                incident["acknowledgements"].append(
                    {"at": at, "acknowledger": reference("user", who, USERS[who][0])}
                )
            if status == "resolved":
                incident["pending_actions"] = []
                for alert in self.alerts.get(incident["id"], []):
                    alert["status"] = "resolved"
                self._count_alerts(incident)
        if urgency:
            incident["urgency"] = urgency
        if isinstance(priority, dict):
            incident["priority"] = reference("priority", priority["id"], PRIORITIES[priority["id"]])
        if isinstance(given.get("title"), str) and given["title"].strip():
            incident["title"] = given["title"].strip()
            incident["summary"] = f"[#{incident['incident_number']}] {incident['title']}"
        if isinstance(given.get("resolution"), str):
            incident["resolve_reason"] = {"type": "resolve_reason", "details": given["resolution"]}
        incident["updated_at"] = at
        self.version += 1
        return None

    def _requester_id(self, requester: str | None) -> str:
        """The user a ``From`` address names (the first user when nobody has it)."""
        return next((i for i, (_, mail) in USERS.items() if mail == requester), "PUSR001")

    def _count_alerts(self, incident: dict[str, Any]) -> None:
        alerts = self.alerts.get(incident["id"], [])
        resolved = sum(a["status"] == "resolved" for a in alerts)
        incident["alert_counts"] = {
            "all": len(alerts),
            "triggered": len(alerts) - resolved,
            "resolved": resolved,
        }

    def _merge(self, target: dict[str, Any], body: Any, requester: str | None) -> Answer:
        if not requester:
            return invalid("A From header is required.")
        sources = body.get("source_incidents") if isinstance(body, dict) else None
        if not isinstance(sources, list) or not sources:
            return invalid("source_incidents is required.")
        found = []
        for source in sources:
            source_id = source.get("id") if isinstance(source, dict) else None
            incident = self.incident(source_id) if isinstance(source_id, str) else None
            if incident is None:
                return error(404, "Not Found", f"Incident {source_id} not found.", code=2100)
            if source_id == target["id"]:
                return invalid("An incident cannot merge into itself.")
            found.append(incident)
        for incident in found:
            moved = self.alerts.get(incident["id"], [])
            for alert in moved:
                alert["incident"] = reference("incident", target["id"], target["title"])
            self.alerts.setdefault(target["id"], []).extend(moved)
            self.alerts[incident["id"]] = []
            incident["status"] = "resolved"
            incident["resolve_reason"] = {
                "type": "merge_resolve_reason",
                "incident": reference("incident", target["id"], target["title"]),
            }
            self._count_alerts(incident)
        self._count_alerts(target)
        target["updated_at"] = _now()
        self.version += 1
        # PagerDuty answers a reference to the target, not the incident.
        return 200, {"incident": reference("incident", target["id"], target["summary"])}

    def _snooze(self, incident: dict[str, Any], body: Any, requester: str | None) -> Answer:
        if not requester:
            return invalid("A From header is required.")
        duration = body.get("duration") if isinstance(body, dict) else None
        if not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
            return error(
                400, "Invalid Input Provided", "duration must be a positive number of seconds."
            )
        if incident["status"] != "acknowledged":
            return error(
                400,
                "Incident is not acknowledged",
                "Only an acknowledged incident can be snoozed.",
                code=2002,
            )
        until = datetime.now(UTC) + timedelta(seconds=duration)
        incident["pending_actions"] = [
            {"type": "unacknowledge", "at": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
        ]
        incident["updated_at"] = _now()
        self.version += 1
        return 201, {"incident": incident}

    def _note(self, incident: dict[str, Any], body: Any, requester: str | None) -> Answer:
        if not requester:
            return invalid("A From header is required.")
        content = (
            ((body or {}).get("note") or {}).get("content") if isinstance(body, dict) else None
        )
        if not isinstance(content, str) or not content.strip():
            return invalid("Note content can't be blank.")
        who = self._requester_id(requester)
        note = {
            "id": f"PNOTE{next(self.ids):04d}",
            "user": reference("user", who, USERS[who][0]),
            "channel": {"summary": "The API"},
            "content": content,
            "created_at": _now(),
        }
        self.notes.setdefault(incident["id"], []).append(note)
        return success("POST", "/incidents/{id}/notes"), {"note": note}

    # -- dispatch ----------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        requester: str | None,
    ) -> Answer:
        """Answer one request as PagerDuty would."""
        parts = path.strip("/").split("/")
        if parts[0] == "incidents":
            answer = self._incidents(method, parts[1:], query, body, requester)
            if answer is not None:
                return answer
        elif parts[0] in ("services", "users", "priorities") and method == "GET":
            answer = self._directory(parts, query)
            if answer is not None:
                return answer
        for example_method, pattern, status, example in _examples():
            if example_method == method and pattern.match(path):
                return status, example
        return NOT_FOUND

    def _incidents(
        self,
        method: str,
        rest: list[str],
        query: dict[str, list[str]],
        body: Any,
        requester: str | None,
    ) -> Answer | None:
        if not rest:
            if method == "GET":
                return 200, _page(self._listed(query), "incidents", query)
            if method == "POST":
                return self._create(body, requester)
            if method == "PUT":
                return self._update_many(body, requester)
            return None
        incident = self.incident(rest[0])
        if incident is None:
            return NOT_FOUND
        tail = rest[1:]
        if not tail:
            if method == "GET":
                return 200, {"incident": incident}
            if method == "PUT":
                given = body.get("incident") if isinstance(body, dict) else None
                refused = self._update(incident, given, requester)
                return refused or (200, {"incident": incident})
            return None
        if tail == ["merge"] and method == "PUT":
            return self._merge(incident, body, requester)
        if tail == ["snooze"] and method == "POST":
            return self._snooze(incident, body, requester)
        if tail == ["notes"]:
            if method == "GET":
                return 200, {"notes": self.notes.get(incident["id"], [])}
            if method == "POST":
                return self._note(incident, body, requester)
        if tail[0] == "alerts" and method == "GET":
            alerts = self.alerts.get(incident["id"], [])
            if len(tail) == 1:
                return 200, _page(alerts, "alerts", query)
            alert = next((a for a in alerts if a["id"] == tail[1]), None)
            return (200, {"alert": alert}) if alert else NOT_FOUND
        return None

    def _update_many(self, body: Any, requester: str | None) -> Answer:
        given = body.get("incidents") if isinstance(body, dict) else None
        if not isinstance(given, list) or not given:
            return invalid("incidents is required.")
        updated = []
        for change in given:
            incident = self.incident(change.get("id")) if isinstance(change, dict) else None
            if incident is None:
                return error(404, "Not Found", "An incident was not found.", code=2100)
            refused = self._update(incident, change, requester)
            if refused:
                return refused
            updated.append(incident)
        return 200, {"incidents": updated}

    def _directory(self, parts: list[str], query: dict[str, list[str]]) -> Answer | None:
        kind = parts[0]
        make, known = {
            "services": (_service, SERVICES),
            "users": (_user, USERS),
            "priorities": (_priority, PRIORITIES),
        }[kind]
        if len(parts) == 1:
            return 200, _page([make(i) for i in known], kind, query)
        if len(parts) == 2 and kind != "priorities":
            if parts[1] not in known:
                return NOT_FOUND
            return 200, {kind[:-1]: make(parts[1])}
        return None
