"""Crawling: the frontier's rules, the state store, the fetcher, the parser, the worker's service.

``policy`` and ``revisit`` are pure rules (injected clock); ``state`` is the SQLite store the
coordinator writes; ``fetch``/``transport``/``parse`` run on the worker behind ``service``;
``run`` drives one crawl from the coordinator.
"""
