"""A schedule's tick claims on disk, beside its ``ticks.jsonl``: the record that outlives the name server.

``runs/{name}/claims/`` holds, per decided tick:

* ``<stamp>.claim`` -- who decided the tick and how (JSON). It is written to a temporary file and
  then ``link``ed to its name, which fails when the name exists: a compare-and-set on any POSIX
  file system (NFS included), and readers never see half a claim.
* ``<stamp>.end`` -- how a fired tick's run ended, created the same way by whoever records it
  first: the scheduler that ran it, with its status, or a leader that found that scheduler
  dead, with ``lost``. Only its creator appends the tick's ``ticks.jsonl`` line.
* ``fence`` -- the highest lease token that has led the schedule. A claim is created under an
  exclusive lock of ``fence.lock`` and only while ``fence`` is not above the claimer's token,
  so a leader that was superseded (paused, partitioned) can no longer claim anything, whatever
  it still believes about its lease.

Schedulers that share this folder (one host, or a shared file system) can never both claim a
tick, whatever their name server forgets.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from pyrocluster.scheduler.store import Claim, End
from pyrocluster.scheduler.ticks import from_stamp, stamp


class Fenced(Exception):
    """A newer leader has raised the fence above our token: we no longer lead."""


class Ledger:
    """The claims folder of one schedule."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fence(self) -> int:
        """The highest token that has led (0 when none has)."""
        try:
            return int((self.folder / "fence").read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return 0

    def raise_fence(self, token: int) -> bool:
        """Record that ``token`` leads now; False when a higher token already has."""
        with self._locked():
            current = self.fence()
            if current > token:
                return False
            if token > current:
                self._write_new(self.folder / "fence", str(token).encode(), replace=True)
            return True

    def claim(self, tick: datetime, claim: Claim) -> Claim | None:
        """Claim ``tick``; None when it is ours now, else the claim that holds it.

        Raises :class:`Fenced` when the fence is above ``claim.token``.
        """
        path = self.folder / f"{stamp(tick)}.claim"
        with self._locked():
            fence = self.fence()
            if fence > claim.token:
                raise Fenced(f"token {claim.token} is below the fence {fence}")
            if self._write_new(path, json.dumps(asdict(claim)).encode()):
                return None
        held = self._read_claim(path) or Claim(decision="unknown", by="", name="")
        ours = held.by == claim.by and held.decision == claim.decision and self.ended(tick) is None
        return None if ours else held  # our own claim, unless we withdrew it

    def end(self, tick: datetime, end: End) -> End | None:
        """Record how ``tick``'s run ended; None when this record is ours, else the one there first."""
        path = self.folder / f"{stamp(tick)}.end"
        if self._write_new(path, json.dumps(asdict(end)).encode()):
            return None
        held = self.ended(tick) or End("unknown", "")
        return None if held.by == end.by else held

    def ended(self, tick: datetime) -> End | None:
        """How ``tick``'s run ended, or None while nobody recorded it."""
        data = _read_json(self.folder / f"{stamp(tick)}.end")
        return End(str(data.get("status", "")), str(data.get("by", ""))) if data is not None else None

    def newest(self) -> datetime | None:
        """The newest claimed tick, or None when there is none."""
        stamps = [name for name, _ in self._claims()]
        return from_stamp(max(stamps)) if stamps else None

    def unended(self) -> dict[datetime, Claim]:
        """Fired ticks whose run has no recorded end yet, with their claims."""
        out: dict[datetime, Claim] = {}
        for name, path in self._claims():
            if (self.folder / f"{name}.end").exists():
                continue
            claim = self._read_claim(path)
            if claim is not None and claim.decision == "fired":
                out[from_stamp(name)] = claim
        return out

    def forget(self, ticks: Iterable[datetime]) -> None:
        """Remove the records of old ticks (pruning)."""
        for tick in ticks:
            for suffix in (".claim", ".end"):
                (self.folder / f"{stamp(tick)}{suffix}").unlink(missing_ok=True)

    def forget_before(self, limit: datetime) -> None:
        """Remove the records of every tick before ``limit`` (pruning what an absence left behind)."""
        self.forget([from_stamp(name) for name, _ in self._claims() if from_stamp(name) < limit])

    def _claims(self) -> Iterator[tuple[str, Path]]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            name, dot, suffix = entry.name.partition(".")
            if suffix == "claim" and dot and not name.startswith("."):
                yield name, Path(entry.path)

    def _read_claim(self, path: Path) -> Claim | None:
        data = _read_json(path)
        if data is None:
            return None
        try:
            return Claim(**data)
        except TypeError:
            return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "fence.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write_new(self, path: Path, data: bytes, replace: bool = False) -> bool:
        """Write ``data`` to ``path`` whole: False when ``path`` exists (unless ``replace``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_bytes(data)
        try:
            if replace:
                os.replace(tmp, path)
                return True
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
