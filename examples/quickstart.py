"""The Python API on a private local cluster: `python examples/quickstart.py`."""

from pyrocluster import Cluster, TaskFailed

if __name__ == "__main__":
    with Cluster.local(workers=2) as cluster:
        print("add(40, 2) =", cluster.submit("add", 40, 2).result())
        squares = list(cluster.starmap("add", [(i, i) for i in range(10_000)]))
        print("10,000 adds, last =", squares[-1])
        primes = sum(cluster.starmap("count_primes", [(k * 100_000, (k + 1) * 100_000) for k in range(10)]))
        print("primes below 1,000,000 =", primes)
        try:
            cluster.submit("fail", "on purpose").result()
        except TaskFailed as exc:
            print("fail() raised", exc.type, "-", exc.message)
        for worker in cluster.status()["workers"]:
            print(f"worker {worker['name']}: {worker['done']} done, {worker['failed']} failed")
