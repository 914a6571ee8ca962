#!/usr/bin/env python3
"""What one durable journal write costs on this machine's disk, apart from the vault.

Writes 4 KiB at a time into a preallocated file and fdatasyncs after each write (as the journal
does for a batch), from 1, 2 and 4 threads at once, and prints the wall time and the CPU time
per write+sync. The CPU time is what the durable phases of benches/http_load.sh pay per batch
on top of the echo ceiling; see BENCHMARKS.md.

    python3 benches/sync_cost.py [DIR]     # DIR: where the vault's data would be (default /tmp)
"""
import os
import resource
import sys
import tempfile
import threading
import time

WRITES = 2000
SIZE = 4096


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def writer(path, slot, out):
    fd = os.open(path, os.O_RDWR)
    start = slot * WRITES * SIZE
    t = time.perf_counter()
    for k in range(WRITES):
        os.pwrite(fd, b"x" * SIZE, start + k * SIZE)
        os.fdatasync(fd)
    out[slot] = time.perf_counter() - t
    os.close(fd)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        # Written and synced first, so that the measured syncs have no file size to update.
        f.write(b"\0" * (4 * WRITES * SIZE))
        f.flush()
        os.fsync(f.fileno())
        print(f"write {SIZE} B + fdatasync, {WRITES} per thread, in {directory}")
        for threads in (1, 2, 4):
            out = {}
            ts = [threading.Thread(target=writer, args=(f.name, i, out)) for i in range(threads)]
            cpu, t = cpu_seconds(), time.perf_counter()
            for x in ts:
                x.start()
            for x in ts:
                x.join()
            wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
            n = threads * WRITES
            print(
                f"{threads} thread(s): {n / wall:7.0f} syncs/s, "
                f"{wall / WRITES * 1e6:4.0f} us per sync per thread, "
                f"{cpu / n * 1e6:4.1f} us CPU per write+sync"
            )


if __name__ == "__main__":
    main()
