"""supervisor.gone(): a killed process counts as gone only once every thread has exited, since its
open files (the lab's lock) are held until the last one has."""
import signal
import subprocess
import sys
import threading

from probes.poll import wait_until
from testbed import supervisor

THREADED = ("import threading, time\n"
            "for _ in range(4): threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
            "print('up', flush=True)\n"
            "time.sleep(600)\n")


def test_a_running_threaded_process_is_neither_gone_nor_dead():
    proc = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        start = supervisor.start_time(proc.pid)
        assert supervisor.alive(proc.pid, start) and not supervisor.gone(proc.pid, start)
        proc.send_signal(signal.SIGKILL)
        wait_until(lambda: supervisor.gone(proc.pid, start), timeout=10, message="killed process gone")
        assert not supervisor.alive(proc.pid, start)  # a zombie until reaped, never alive
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_leader_with_a_live_thread_is_dead_but_not_gone():
    """What a killed agent looks like for a moment: /proc shows the leader as Z, a thread runs on."""
    child = ("import os, threading, time, sys\n"
             "threading.Thread(target=lambda: (time.sleep(600)), daemon=False).start()\n"
             "print('up', flush=True)\n"
             "import ctypes; ctypes.CDLL(None).syscall(60, 0)\n")  # SYS_exit: ends the leader thread only
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        start = supervisor.start_time(proc.pid)
        wait_until(lambda: not supervisor.alive(proc.pid, start), timeout=10, message="leader a zombie")
        assert not supervisor.gone(proc.pid, start)
    finally:
        proc.kill()
        proc.wait()
    assert supervisor.gone(proc.pid, start)


def test_a_pid_whose_start_time_differs_is_gone():
    me = threading.get_native_id()
    assert supervisor.gone(me, "not-a-start-time")
