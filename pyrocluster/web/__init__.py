"""The dashboard: a live page, ``/api/status`` and ``/metrics``, served from a background-refreshed cache."""
