"""Every default in one place, with its unit in its name; imports nothing (safe for any module)."""

DEFAULT_NS_HOST = "127.0.0.1"
"""Name server host when neither ``--ns`` nor ``PYROCLUSTER_NS`` is given."""
DEFAULT_NS_PORT = 9090
"""Name server port (TCP) when none is given."""
DEFAULT_HEARTBEAT_S = 5.0
"""Seconds between a worker's registration checks."""
DEFAULT_NS_WAIT_S = 30.0
"""Seconds a starting worker waits for its name server to appear (start-up races in systemd, compose)."""
DEFAULT_DRAIN_TIMEOUT_S = 30.0
"""Seconds a stopping worker waits for the tasks it holds."""
DEFAULT_TASK_TIMEOUT_S = 60.0
"""Seconds one attempt of a task may take."""
DEFAULT_RETRIES = 3
"""Further attempts after a worker died, hung or was unreachable."""
DEFAULT_PROBE_TIMEOUT_S = 3.0
"""Seconds of liveness-probe silence after which a worker counts as dead."""
PROBE_INTERVAL_S = 1.0
"""Seconds between liveness probes of a worker that holds work."""
DEFAULT_WAIT_S = 30.0
"""Seconds a call waits for any live worker offering its service (API)."""
DEFAULT_SUBMIT_WAIT_S = 10.0
"""Seconds ``submit`` waits for a worker offering a needed service or tag."""
DISCOVERY_INTERVAL_S = 1.0
"""Seconds between a coordinator's name-server look-ups for new workers."""
DEFAULT_CRAWL_CONCURRENCY = 16
"""Concurrent fetches a worker's crawl service runs."""
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest Pyro5 message of small values, in bytes (batches are a quarter of it)."""
DEFAULT_MAX_VALUE_BYTES = 1024**3
"""Largest single argument or result (encoded) that crosses the wire, in bytes."""
CONNECT_TIMEOUT_S = 5.0
"""Seconds for control-plane calls (name server, info, ping)."""

DEFAULT_CRAWL_MAX_PAGES = 1000
"""Pages a crawl fetches at most."""
DEFAULT_CRAWL_MAX_DEPTH = 3
"""Link depth a crawl follows at most (seeds are depth 0)."""
DEFAULT_CRAWL_PER_HOST_RATE = 10.0
"""Requests per second per host, across all workers."""
DEFAULT_CRAWL_MAX_BYTES = 5_000_000
"""Bytes of a page body kept; the rest is cut off (``truncated: true``)."""
DEFAULT_CRAWL_TIMEOUT_S = 30.0
"""Seconds one page fetch may take."""
MAX_URL_CHARS = 8192
"""Longest URL the crawl accepts, in characters."""

DEFAULT_SCHEDULE_OUTPUT = "runs/{name}/{fire}.results.jsonl"
"""Where each tick of a schedule writes its results, relative to the scheduler's current directory."""
DEFAULT_CATCHUP_S = 3600.0
"""Seconds late a missed tick of a schedule may still fire."""
DEFAULT_SCHEDULER_STATE = "runs/scheduler.state.json"
"""The scheduler's local copy of each schedule's newest decided tick."""
DEFAULT_FORGET_AFTER_S = 600.0
"""Seconds a registered worker or job may stay silent before the name server forgets it."""
DEFAULT_REPLY_SPIN_S = 100e-6
"""Seconds the thread waiting for a lone call's reply polls without sleeping first (``replyspin.py``)."""
MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""Longest per-call timeout a worker accepts, in seconds."""
MAX_PRIORITY = 2**31
"""Largest priority magnitude a worker accepts."""
