# One rank of the netaware-lab all-reduce benchmark (run by mpirun, one rank
# per chosen node's namespace). Arguments: message bytes, iterations, and
# for a shaped job its levels innermost first, each SIZE:BYTES.
# Prints, on rank 0, one JSON line: the ranks' hostnames (in rank order),
# each iteration's time in ms (the slowest rank's time: an all-reduce is as
# slow as its slowest member) and the machine's CPU ticks, busy and total,
# over the timed iterations. Needs only mpi4py: the buffers are Python
# arrays.
#
# A shaped iteration is each level's all-reduce in turn, innermost first,
# among the ranks Megatron's convention puts together: a level's group is
# SIZE consecutive groups of the level below, and its communicator joins
# the ranks at the same position in each (tp=2,dp=4: {0,1} {2,3} ... then
# {0,2,4,6} and {1,3,5,7}).
import array
import json
import sys
import time

from mpi4py import MPI

WARMUP = 2

comm = MPI.COMM_WORLD
nbytes, iters = int(sys.argv[1]), int(sys.argv[2])
levels = [tuple(int(x) for x in a.split(":")) for a in sys.argv[3:]]
if not levels:
    levels = [(comm.size, nbytes)]
ranks = 1
for size, _ in levels:
    ranks *= size
if ranks != comm.size:
    sys.exit(f"the shape has {ranks} ranks but mpirun started {comm.size}")

# One communicator and one pair of buffers per level.
steps = []
stride = 1
for size, level_bytes in levels:
    block = stride * size
    color = (comm.rank // block) * stride + comm.rank % stride
    sub = comm.Split(color, comm.rank)
    n = max(1, level_bytes // 4)
    steps.append((sub, array.array("f", [1.0]) * n, array.array("f", [0.0]) * n))
    stride = block


def cpu_ticks():
    # The machine's CPU time so far, in clock ticks (/proc/stat's first
    # line): busy (all but idle and iowait) and total. Every rank runs on
    # this one machine, so rank 0's reading covers them all.
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]
    return sum(t) - t[3] - t[4], sum(t)


times = []
cpu_start = None
for i in range(iters + WARMUP):
    comm.Barrier()
    if i == WARMUP and comm.rank == 0:
        cpu_start = cpu_ticks()
    t0 = time.perf_counter()
    for sub, send, recv in steps:
        sub.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
    dt = time.perf_counter() - t0
    worst = comm.allreduce(dt, op=MPI.MAX)
    if i >= WARMUP:
        times.append(worst * 1000.0)
cpu = None
if comm.rank == 0 and cpu_start is not None:
    end = cpu_ticks()
    cpu = [end[0] - cpu_start[0], end[1] - cpu_start[1]]
hosts = comm.allgather(MPI.Get_processor_name())
for sub, _, recv in steps:
    if recv[0] != float(sub.size):
        sys.exit(f"wrong all-reduce result {recv[0]} on {sub.size} ranks")
if comm.rank == 0:
    print(json.dumps({"hosts": hosts, "iter_ms": times, "cpu_ticks": cpu}))
