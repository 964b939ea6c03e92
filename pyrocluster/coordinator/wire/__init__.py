"""Multiplexed Pyro5 calls: every request written and every reply read, a piece at a time, by one loop.

A blocking Pyro5 proxy holds a thread for as long as its call runs, so a coordinator built on
them needs a thread per call in flight (and one per worker to probe it). Here a call is split
into its two halves on the proxy's own connection, whose socket is non-blocking once connected:

* **send**: the caller's thread encodes the request and queues it on its channel; the loop
  writes it as the socket takes it (``frames.RequestWriter``), so no caller writes to a socket
  while holding a lock of its own. A caller that holds no lock may write its own request
  (``hold_write`` then :meth:`Wire.push`, non-blocking: the loop takes what the socket did not).
  A channel not yet connected is connected by a thread of a small pool (the Pyro5 handshake
  blocks, bounded by the connect timeout);
* **receive**: the loop waits on every socket with a call out (``selectors``) and reads each
  reply as its bytes arrive (``frames.ReplyReader``): a peer that stops mid-reply or drips
  bytes holds only its own buffer, never the loop, so every other reply and every deadline is
  served meanwhile.

A channel's socket is used by one thread at a time: the loop, or a caller that claimed it to
read its own reply (:meth:`Wire.receive_here`). So the coordinator's thread count does not
depend on the number of workers or of calls in flight: one loop thread plus at most
``POOL_THREADS``. A call may carry a deadline; when it passes, the call fails with
``Pyro5.errors.TimeoutError`` and its connection is closed.

The package: ``core.py`` (the loop, and the states a channel's call moves through), ``caller.py``
(what a caller does on its own thread: ``Wire``), ``lonecall.py`` (a lone direct call written
and read by one function each, outside :meth:`Wire.call`).
"""

from pyrocluster.coordinator.wire.caller import Wire
from pyrocluster.coordinator.wire.core import ADOPT_S, LOOP_TICK_S, POOL_THREADS

__all__ = ["ADOPT_S", "LOOP_TICK_S", "POOL_THREADS", "Wire"]
