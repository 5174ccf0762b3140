# One rank of the netaware-lab all-reduce benchmark (run by mpirun, one rank
# per chosen node's namespace). Arguments: message bytes, iterations.
# Prints, on rank 0, one JSON line: the ranks' hostnames and each iteration's
# time in ms (the slowest rank's time: an all-reduce is as slow as its
# slowest member). Needs only mpi4py: the buffers are Python arrays.
import array
import json
import sys
import time

from mpi4py import MPI

WARMUP = 2

comm = MPI.COMM_WORLD
nbytes, iters = int(sys.argv[1]), int(sys.argv[2])
n = max(1, nbytes // 4)
send = array.array("f", [1.0]) * n
recv = array.array("f", [0.0]) * n
times = []
for i in range(iters + WARMUP):
    comm.Barrier()
    t0 = time.perf_counter()
    comm.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
    dt = time.perf_counter() - t0
    worst = comm.allreduce(dt, op=MPI.MAX)
    if i >= WARMUP:
        times.append(worst * 1000.0)
hosts = comm.allgather(MPI.Get_processor_name())
if recv[0] != float(comm.size):
    sys.exit(f"wrong all-reduce result {recv[0]} on {comm.size} ranks")
if comm.rank == 0:
    print(json.dumps({"hosts": hosts, "iter_ms": times}))
