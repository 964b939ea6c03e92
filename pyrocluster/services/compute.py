"""The exposed compute service: the worker protocol (docs/protocol.md) on top of the gate and the slots."""

from __future__ import annotations

import math
import operator
import threading
from typing import Any

import Pyro5.api
import Pyro5.callcontext
import Pyro5.serializers

from pyrocluster import attachments, codec, protocol, resources, tasks
from pyrocluster.config import SERPENT_GROWTH, Settings
from pyrocluster.defaults import MAX_PRIORITY, MAX_TIMEOUT_S
from pyrocluster.roles import requires
from pyrocluster.services.batchcolumns import (
    MAX_ID_CHARS,
    call_count,
    column_rows,
    columns_reply,
    is_columns,
    plain_columns,
)
from pyrocluster.services.state import WorkerState
from pyrocluster.services.taskstats import OTHER
from pyrocluster.services.values import ValueKeeper
from pyrocluster.slots.batch import (
    MAX_CALLS,
    OUTCOME_OVERHEAD_BYTES,
    Budget,
    Outcome,
    cancelled,
    encoded_failure,
)
from pyrocluster.slots.gate import Gate, Ticket
from pyrocluster.slots.process import ProcessSlots
from pyrocluster.slots.threads import ThreadSlots
from pyrocluster.tokens import Role
from pyrocluster.valueref import KEEP_BYTES

MAX_BATCH = MAX_CALLS
"""Most calls accepted in one batch."""
REPLY_OVERHEAD_BYTES = 64 * 1024
"""What a reply costs besides its outcomes (Pyro5 framing, ``load``), kept free under the cap."""


def _id_problem(value: Any, what: str) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        return f"{what} must be a string of 1 to {MAX_ID_CHARS} characters"
    return None


def check_call(call: Any) -> str | None:
    """What is wrong with one ``[call_id, name, payload, timeout_s, priority(, resources)]`` call,
    or None."""
    if type(call) is list and (len(call) == 5 or (len(call) == 6 and type(call[5]) is dict)):
        call_id, name, _payload, timeout_s, priority = call[:5]  # the fast path of well-formed calls
        if (
            type(call_id) is str
            and 0 < len(call_id) <= MAX_ID_CHARS
            and type(name) is str
            and type(timeout_s) in (float, int)
            and 0 < timeout_s <= MAX_TIMEOUT_S
            and type(priority) is int
            and -MAX_PRIORITY <= priority <= MAX_PRIORITY
        ):
            return None
    if not isinstance(call, (list, tuple)) or len(call) not in (5, 6):
        return "a call must be [call_id, name, payload, timeout_s, priority(, resources)]"
    if len(call) == 6 and not isinstance(call[5], dict):
        return "resources must be a dict of name: amount"
    call_id, name, _payload, timeout_s, priority = call[:5]
    problem = _id_problem(call_id, "call_id")
    if problem:
        return problem
    if not isinstance(name, str):
        return "task name must be a string"
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        return f"timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]"
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        return "priority must be an integer"
    return None


def plain_batch(calls: Any, known: Any, max_payload: int) -> tuple[Any, ...] | None:
    """``(ids, names, payloads, timeouts, priority)`` of a batch whose every call is a
    well-formed 5-element call of a task in ``known`` with a bytes payload of at most
    ``max_payload`` bytes (the common batch), checked a field at a time in C-level passes
    (about 0.1 us a call instead of 1.5 us call by call); None for any other batch, which is
    checked call by call so that each bad call fails alone.

    The types are checked over each whole column; the bounds over the set of a column's distinct
    values (a batch's ids share a few lengths, its calls one timeout and one priority)."""
    if type(calls) is list and len(calls) == 1:
        return _plain_call(calls[0], known, max_payload)
    if not calls or set(map(type, calls)) != {list} or set(map(len, calls)) != {5}:
        return None
    ids, names, payloads, timeouts, priorities = zip(*calls, strict=True)
    try:
        if not (
            set(map(type, ids)) == {str}
            and set(names) <= known  # its keys are str: a name found among them is one
            and set(map(type, payloads)) == {bytes}
            and set(map(type, timeouts)) <= {float, int}
            and set(map(type, priorities)) == {int}
        ):
            return None
        id_lengths, timeout_values, priority_values = set(map(len, ids)), set(timeouts), set(priorities)
        plain = (
            min(id_lengths) > 0
            and max(id_lengths) <= MAX_ID_CHARS
            and max(map(len, payloads)) <= max_payload
            and not any(map(math.isnan, timeout_values))  # first: min and max are not reliable past a NaN
            and min(timeout_values) > 0
            and max(timeout_values) <= MAX_TIMEOUT_S
            and min(priority_values) >= -MAX_PRIORITY
            and max(priority_values) <= MAX_PRIORITY
        )
    except (OverflowError, TypeError):  # an int too big for a float; a name that is no key
        return None
    return (ids, names, payloads, timeouts, max(priority_values)) if plain else None


def _as_plain(
    ids: list[str], name: str, payloads: list[bytes], timeout_s: float, priority: int
) -> tuple[Any, ...]:
    """``plain_columns``' checked batch as :func:`plain_batch` gives one."""
    return ids, [name] * len(ids), payloads, [timeout_s] * len(ids), priority


def _plain_call(call: Any, known: Any, max_payload: int) -> tuple[Any, ...] | None:
    """:func:`plain_batch` of a lone call (a direct call's), its fields checked one by one:
    1 us where the column passes take 5."""
    if type(call) is not list or len(call) != 5:
        return None
    call_id, name, payload, timeout_s, priority = call
    try:
        plain = (
            type(call_id) is str
            and 0 < len(call_id) <= MAX_ID_CHARS
            and name in known  # its keys are str: a name found among them is one
            and type(payload) is bytes
            and len(payload) <= max_payload
            and type(timeout_s) in (float, int)
            and 0 < timeout_s <= MAX_TIMEOUT_S  # False for a NaN
            and type(priority) is int
            and -MAX_PRIORITY <= priority <= MAX_PRIORITY
        )
    except TypeError:  # a name that is no key
        return None
    return ((call_id,), (name,), (payload,), (timeout_s,), priority) if plain else None


def _big_value_fields(request: dict[Any, Any]) -> tuple[set[str], dict[str, Any]]:
    """The call ids whose big results stay here (``keep``), and per call id the references its
    arguments hold (``fetch``); malformed fields count as absent."""
    keep, fetch = request.get("keep"), request.get("fetch")
    if not isinstance(keep, list):
        ids: set[str] = set()
    elif set(map(type, keep)) == {str}:  # the usual list (every call of a job's batch): one C-level pass
        ids = set(keep)
    else:
        ids = {k for k in keep if isinstance(k, str)}
    return ids, fetch if isinstance(fetch, dict) else {}


_VALUE = operator.itemgetter(1)


def _invalid(message: str) -> Outcome:
    return encoded_failure(protocol.ERROR, "InvalidCall", message)


class _BatchAsks:
    """The resource asks of one batch's calls: each distinct ask is read once (the calls of a
    batch share one: 18 us a call read each time, under 1 us compared with the last)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._raw: Any = None
        self._refused: Outcome | None = None
        self.held: dict[str, float] | None = None
        """What the batch holds: per resource the most any call asks (they run in turn); None
        when every call asks the default ``cpu: 1``."""

    def take(self, raw: dict[Any, Any]) -> Outcome | None:
        """Count one call's ask; its failure outcome when the ask is malformed or over the totals."""
        if self._raw is None or raw != self._raw:
            self._raw = raw
            try:
                own = resources.full_ask(resources.parse_mapping(raw))
            except ValueError as exc:
                self._refused = _invalid(f"resources: {exc}")
                return list(self._refused)
            if not self._gate.fits_totals(own):
                self._refused = _unfit(own, self._gate.totals)
                return list(self._refused)
            self._refused = None
            if self.held is None:
                self.held = own
            else:
                for name, amount in own.items():
                    self.held[name] = max(self.held.get(name, 0.0), amount)
        return None if self._refused is None else list(self._refused)


def _unfit(ask: dict[str, float], totals: dict[str, float]) -> Outcome:
    """ERROR ResourcesUnavailable for a call asking more than this worker has at all."""
    over = resources.shortfall(ask, [totals]) or ("?", 0.0)
    name, largest = over
    message = (
        f"the call asks {resources.show(name, ask.get(name, 0.0))} {name}; "
        f"this worker has {resources.show(name, largest)}"
    )
    return encoded_failure(protocol.ERROR, "ResourcesUnavailable", message)


def reply_budget(settings: Settings, serializer_id: int | None) -> Budget:
    """What one reply may hold: small values under the message cap, and one value up to
    ``max_value_bytes`` (``Settings.wire_cap_bytes`` has room for both)."""
    room = max(settings.max_message_bytes - REPLY_OVERHEAD_BYTES, OUTCOME_OVERHEAD_BYTES)
    if serializer_id == Pyro5.serializers.SerpentSerializer.serializer_id:
        room = int(room / SERPENT_GROWTH)
    return Budget(room, settings.max_value_bytes)


def too_large_arguments(size: int, cap: int) -> Outcome:
    """ERROR ArgumentsTooLarge for arguments over this worker's ``max_value_bytes``."""
    message = f"arguments of {size} bytes are over max_value_bytes ({cap} bytes) of this worker"
    return encoded_failure(protocol.ERROR, "ArgumentsTooLarge", message)


def receive_attached(sock: Any, request: Any, cap: int) -> dict[int, bytes | bytearray | int]:
    """The payloads sent after a ``run_batch`` request, by call place (a body over ``cap`` as its
    size, read and dropped). AttachmentError (the connection is then closed) when the request
    names them badly or the stream breaks."""
    places = request.get("attached") if isinstance(request, dict) else None
    if places is None:
        return {}
    if sock is None:
        raise attachments.AttachmentError("attachments named, but the call came on no connection")
    count = call_count(request)
    if (
        not isinstance(places, list)
        or count is None
        or len(places) > MAX_BATCH
        or len(set(places)) != len(places)
        or not all(type(p) is int and 0 <= p < count for p in places)
    ):
        raise attachments.AttachmentError("'attached' must list distinct places of calls")
    room = Pyro5.config.MAX_MESSAGE_SIZE  # what the message itself could have carried
    bodies: dict[int, bytes | bytearray | int] = {}
    for place in places:
        body = attachments.receive(sock, min(cap, room))
        room -= body if isinstance(body, int) else len(body)
        bodies[place] = body
    return bodies


def send_attached(sock: Any, reply: dict[str, Any]) -> None:
    """Send the reply's big outcome values ahead of it as attachments (``reply["attached"]``)."""
    if max(map(len, filter(None, map(_VALUE, reply["outcomes"]))), default=0) < attachments.ATTACH_BYTES:
        return  # none (one C-level pass over the common reply)
    places = []
    for place, outcome in enumerate(reply["outcomes"]):
        value = outcome[1]
        if isinstance(value, (bytes, bytearray)) and len(value) >= attachments.ATTACH_BYTES:
            attachments.send(sock, value)
            reply["outcomes"][place] = [outcome[0], None, outcome[2]]
            places.append(place)
    if places:
        reply["attached"] = places


@Pyro5.api.expose
class ComputeService:
    """Runs registered tasks for any number of coordinators, never more batches than its slots."""

    def __init__(
        self,
        state: WorkerState,
        slots: ProcessSlots | ThreadSlots,
        gate: Gate,
        settings: Settings,
        values: ValueKeeper | None = None,
    ) -> None:
        self._state = state
        self._values = values
        """Keeps big results and fetches big arguments (the ``keep`` and ``fetch`` of a request)."""
        self._slots = slots
        self._gate = gate
        self._settings = settings
        self._lock = threading.Lock()
        self._tickets: dict[str, dict[Ticket, list[str]]] = {}
        """Per coordinator, its batches here (queued or running) and their call ids."""

    @requires(Role.VIEWER, "list tasks")
    def tasks(self) -> list[str]:
        """Names of the tasks this worker can run."""
        return sorted(tasks.REGISTRY)

    @requires(Role.SUBMITTER, "run tasks")
    def run_batch(self, request: Any) -> dict[str, Any]:
        """Run a batch in one slot (waiting for one if need be): ``{"outcomes", "load"}``, or
        ``{"busy"|"refused", "load"}``, or ``{"error"}`` for a malformed request.

        Big payloads sent after the request (``attached``) are read first, and big outcome
        values go back the same way when the request asks (``attach``): docs/protocol.md,
        "Attachments"."""
        sock = getattr(Pyro5.callcontext.current_context.client, "sock", None)
        bodies = receive_attached(sock, request, self._settings.max_value_bytes)
        reply = self._run_batch(request, bodies)
        bodies.clear()  # the arguments are done with before the results go out
        if isinstance(request, dict) and request.get("attach") == 1 and "outcomes" in reply:
            send_attached(sock, reply)
        return reply

    def _run_batch(self, request: Any, bodies: dict[int, bytes | bytearray | int]) -> dict[str, Any]:
        if not self._state.accepting():
            return {"refused": "draining", "load": self._gate.load()}
        if not isinstance(request, dict):
            return {"error": "a request must be a dict with 'from' and 'calls'"}
        sender = request.get("from")
        problem = _id_problem(sender, "'from'")
        if problem or not isinstance(sender, str):
            return {"error": problem or "'from' must be a string"}
        keep, fetch = _big_value_fields(request)
        known, cap = tasks.REGISTRY.keys(), self._settings.max_value_bytes
        if is_columns(request):
            taken = None if bodies or fetch else plain_columns(request, known, cap)
            if taken is not None:  # the common batch of a map or a job: one task, one timeout
                return self._run_plain(sender, _as_plain(*taken), keep, columns=True)
            calls = column_rows(request)  # any other: call by call, as rows
            if calls is None or not 0 < len(calls) <= MAX_BATCH:
                why = f"'ids' and 'payloads' must be two lists of 1 to {MAX_BATCH} calls, of one length"
                return {"error": why}
        else:
            calls = request.get("calls")
            if not isinstance(calls, (list, tuple)) or not 0 < len(calls) <= MAX_BATCH:
                return {"error": f"'calls' must be a list of 1 to {MAX_BATCH} calls"}
            if not bodies and not fetch:  # no attached payload, no value to fetch
                plain = plain_batch(calls, known, cap)
                if plain is not None:
                    return self._run_plain(sender, plain, keep)
        outcomes: list[Outcome | None] = [None] * len(calls)
        names: list[str] = []  # per call, for the counters: "other" for anything not registered
        places: list[int] = []
        ids: list[str] = []
        runnable: list[list[Any]] = []  # [name, payload, timeout_s] as the slot runs it
        priority = -MAX_PRIORITY
        asks = _BatchAsks(self._gate)
        for place, call in enumerate(calls):
            problem = check_call(call)
            if problem:
                outcomes[place] = _invalid(problem)
                names.append(OTHER)
                continue
            call_id, name, payload, timeout_s, call_priority = call[:5]
            if len(call) == 6:
                refused = asks.take(call[5])
                if refused is not None:
                    outcomes[place] = refused
                    names.append(OTHER)
                    continue
            if name not in tasks.REGISTRY:
                outcome = tasks.unknown_task(name)
                outcomes[place] = [outcome[0], codec.pack(outcome[1]), 0.0]
                names.append(OTHER)
                continue
            names.append(name)
            attached = bodies.get(place)
            if type(attached) is int:  # dropped unread: over this worker's cap
                outcomes[place] = too_large_arguments(attached, self._settings.max_value_bytes)
                continue
            try:
                data: bytes | bytearray = codec.as_buffer(payload if attached is None else attached)
            except codec.DecodeError as exc:
                outcomes[place] = _invalid(f"payload: {exc}")
                continue
            if fetch and call_id in fetch and self._values is not None:
                resolved = self._values.resolve(data, fetch[call_id])
                if isinstance(resolved, list):
                    outcomes[place] = resolved
                    continue
                data = resolved
            if len(data) > self._settings.max_value_bytes:
                outcomes[place] = too_large_arguments(len(data), self._settings.max_value_bytes)
                continue
            places.append(place)
            ids.append(call_id)
            runnable.append([name, data, float(timeout_s)])
            priority = max(priority, call_priority)
        if runnable:
            ran = self._run(sender, ids, runnable, priority, asks.held)
            if ran is None:
                return {"busy": True, "load": self._gate.load()}
            kept = self._values if keep else None
            for place, outcome in zip(places, ran, strict=True):
                if kept is not None and calls[place][0] in keep:
                    outcome = kept.keep(sender, outcome)
                outcomes[place] = outcome
        self._state.finished(names, outcomes)
        return {"outcomes": outcomes, "load": self._gate.load()}

    def _run_plain(
        self, sender: str, plain: tuple[Any, ...], keep: set[str], columns: bool = False
    ) -> dict[str, Any]:
        """``run_batch`` of a batch :func:`plain_batch` or ``plain_columns`` checked: every call
        runs (the results of those in ``keep`` over ``KEEP_BYTES`` stay here); the reply in
        columns for a request of columns (:func:`columns_reply`)."""
        ids, names, payloads, timeouts, priority = plain
        runnable = list(map(list, zip(names, payloads, map(float, timeouts), strict=True)))
        ran = self._run(sender, list(ids), runnable, priority, None)
        if ran is None:
            return {"busy": True, "load": self._gate.load()}
        kept = self._values if keep else None
        if kept is not None and max(map(len, filter(None, map(_VALUE, ran))), default=0) > KEEP_BYTES:
            ran = [kept.keep(sender, o) if i in keep else o for i, o in zip(ids, ran, strict=True)]
        self._state.finished(list(names), ran)
        reply = columns_reply(ran) if columns else None
        if reply is None:
            return {"outcomes": ran, "load": self._gate.load()}
        reply["load"] = self._gate.load()
        return reply

    def _run(
        self,
        sender: str,
        ids: list[str],
        runnable: list[list[Any]],
        priority: int,
        ask: dict[str, float] | None,
    ) -> list[Outcome] | None:
        """Admit and run the good calls of a batch; None when the admission queue is full."""
        ticket = Ticket(self._gate, sender, priority, len(runnable), ask)
        with self._lock:  # one entry per batch, not per call: cancel looks the ids up (rare)
            self._tickets.setdefault(sender, {})[ticket] = ids
        self._state.enter()
        try:
            if not self._gate.enter(ticket):
                return None
            if ticket.dropped:
                return [cancelled() for _ in runnable]
            context = Pyro5.callcontext.current_context
            budget = reply_budget(self._settings, getattr(context, "serializer_id", None))
            return self._slots.run(runnable, budget, ticket)
        finally:
            self._state.leave()
            with self._lock:
                held = self._tickets[sender]
                del held[ticket]
                if not held:
                    del self._tickets[sender]

    @requires(Role.SUBMITTER, "cancel tasks")
    def cancel(self, sender: Any, call_ids: Any) -> int:
        """Stop ``sender``'s named calls, queued or running; how many unfinished ones were found."""
        problem = _id_problem(sender, "sender")
        if problem is None and (not isinstance(call_ids, (list, tuple)) or len(call_ids) > MAX_BATCH):
            problem = f"call_ids must be a list of at most {MAX_BATCH} ids"
        if problem:
            raise ValueError(problem)
        wanted = {c for c in call_ids if isinstance(c, str)}
        found: dict[Ticket, set[int]] = {}
        with self._lock:
            for ticket, ids in self._tickets.get(sender, {}).items():
                positions = {i for i, call_id in enumerate(ids) if call_id in wanted}
                if positions:
                    found[ticket] = positions
        # Waiting batches first: a slot freed by stopping a running call must not start one of
        # them only to stop it again (a process slot would be killed twice).
        order = sorted(found, key=Ticket.started)
        stopped = sum(ticket.cancel(found[ticket]) for ticket in order)
        lender = getattr(self._slots, "lender", None)
        if lender is not None:  # direct calls run in slots, outside any batch
            stopped += lender.cancel(sender, wanted)
        return stopped

    @requires(Role.SUBMITTER, "run tasks")
    def direct_outcome(self, sender: Any, call_id: Any) -> dict[str, Any] | None:
        """The reply ``run_batch`` would have given direct calls whose slot process ended while
        it ran them (a lone call, or the batch whose first call is ``call_id``), or None when no
        slot ran them into its end."""
        lender = getattr(self._slots, "lender", None)
        if lender is None or not isinstance(sender, str) or not isinstance(call_id, str):
            return None
        outcomes = lender.outcome_of(sender, call_id)
        return None if outcomes is None else {"outcomes": outcomes, "load": self._gate.load()}
