"""Big call payloads handed to a slot process as shared memory instead of written through its pipe.

Through the pipe, a 256 MiB payload is copied into the kernel and out again a socket buffer at a
time (each a wake-up of the other side), into a new buffer of the slot process. Here the worker
writes it once into an anonymous file (a memfd, nothing named in /dev/shm; ``pwrite`` lets the
interpreter lock go) and passes the file over the pipe (``SCM_RIGHTS``); the slot process maps it
read-only and decodes the call's arrays as views of the mapping (``codec.unpack``), never copied.
The memory goes back when the last view of it goes, or with the process however it ends (a
timeout, a kill): nothing outlives it. The mapping counts in the slot's address space
(``limits``) exactly as the received buffer did. With the result packed straight into the slot's
log (``share.SlotShare.place``), a 256 MiB float64 echo spends a median 0.61-0.71 s in its slot
instead of 0.99-1.24 s (``SlotProcess.execute``, 7 runs, load 5-5.6 on 2 cores), and the slot
process peaks at 547 MiB instead of 799 MiB.
"""

from __future__ import annotations

import mmap
import os
import socket
from typing import Any

from pyrocluster.slots.share import anonymous_file

_TAG = b"F"
"""The one byte that carries the file descriptor."""


def send(sock: socket.socket, payload: Any) -> None:
    """Hand ``payload`` (a buffer) to the process at the other end of ``sock``."""
    view = memoryview(payload).cast("B")
    fd = anonymous_file(len(view))
    try:
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], written)
        socket.send_fds(sock, [_TAG], [fd])
    finally:
        os.close(fd)


def receive(sock: socket.socket) -> mmap.mmap:
    """The payload the worker handed over (a read-only mapping of it)."""
    tag, fds, _flags, _address = socket.recv_fds(sock, 1, 1)
    try:
        if tag != _TAG or len(fds) != 1:
            raise OSError(f"expected a handed-off payload, got {tag!r} with {len(fds)} descriptors")
        return mmap.mmap(fds[0], os.fstat(fds[0]).st_size, access=mmap.ACCESS_READ)
    finally:
        for fd in fds:
            os.close(fd)
