"""User tasks for the integration tests (loaded with --tasks)."""

import os
import signal
import time

from pyrocluster import task


@task
def interval(seconds: float) -> list:
    """Sleep and report [pid, start, end] so tests can measure concurrency."""
    start = time.time()
    time.sleep(seconds)
    return [os.getpid(), start, time.time()]


@task(name="unsendable")
def unsendable() -> object:
    """Return a value that cannot cross the wire."""
    return object()


@task
def whoami() -> int:
    """The pid of the process that ran the task."""
    return os.getpid()


@task
def logged(key: str, path: str, seconds: float = 0.0, hog_n: int = 0) -> str:
    """Append ``key`` to the file ``path`` (one write, so lines never interleave), sleep, then sum
    ``range(hog_n)`` in one C call (see :func:`hog`), return ``key``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    sum(range(hog_n))
    return key


@task
def blob(n: int) -> str:
    """A string of ``n`` characters (a large result from a small argument)."""
    return "x" * n


@task
def write_after(path: str, seconds: float) -> str:
    """Sleep, then create the file ``path``: a side effect that only a task that ran to its end makes."""
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("done\n")
    return path


@task
def die(code: int = 3) -> None:
    """End the process that runs the task at once (a crashing slot process)."""
    os._exit(code)


@task
def hold(path: str, limit: float = 30.0, started: str = "") -> str:
    """Wait until the file ``path`` exists (at most ``limit`` s): a task that ends when the test says.

    With ``started``, it first creates that file, so a test knows the call is running.
    """
    if started:
        open(started, "w").close()
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


@task
def hog(n: int) -> int:
    """Sum ``range(n)`` in one C call, which holds the interpreter lock the whole time and never
    lets a signal handler run (``re`` would not do: its matcher checks for signals)."""
    return sum(range(n))


@task
def side_effect(folder: str, seconds: float = 0.0) -> list:
    """Sleep, then create one new file in ``folder`` holding ``start end``: one file per run of the task."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    name = f"{start:.6f}-{os.getpid()}-{os.urandom(4).hex()}.run"
    with open(os.path.join(folder, name), "x") as f:
        f.write(f"{start} {end}\n")
    return [start, end]


@task
def tamper(how: str) -> str:
    """Change the process's SIGALRM handling as some libraries do, and return normally.

    ``alarm0``: ``signal.alarm(0)``; ``handler``: a handler of its own; ``itimer``: the real-time
    timer pushed an hour away.
    """
    if how == "alarm0":
        signal.alarm(0)
    elif how == "handler":
        signal.signal(signal.SIGALRM, lambda _signum, _frame: None)
    elif how == "itimer":
        signal.setitimer(signal.ITIMER_REAL, 3600)
    else:
        raise ValueError(f"unknown way to tamper: {how}")
    return how


@task
def stamped(key: str, path: str, seconds: float) -> float:
    """Sleep, then append ``key`` and the time to the file ``path`` (one write); return that time."""
    time.sleep(seconds)
    now = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key} {now:.6f}\n".encode())
    finally:
        os.close(fd)
    return now


@task
def gpus_seen(seconds: float = 0.0) -> list:
    """``[CUDA_VISIBLE_DEVICES, start, end]`` after sleeping ``seconds``."""
    start = time.time()
    time.sleep(seconds)
    return [os.environ.get("CUDA_VISIBLE_DEVICES"), start, time.time()]


@task
def allocate(megabytes: int) -> int:
    """Allocate and touch ``megabytes`` MB; return how many bytes were held."""
    block = bytearray(megabytes * 1_000_000)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


@task
def spawn_and_wait(pid_file: str, seconds: float) -> int:
    """Start a child process that would outlive us, note its pid in ``pid_file``, then wait."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as out:
        out.write(str(child.pid))
    time.sleep(seconds)
    return child.pid
