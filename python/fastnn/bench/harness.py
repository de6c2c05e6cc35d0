"""The parent side of `fastnn bench`: worker processes, interleaved rounds, statistics, timeouts.

Every framework configuration runs in its own fresh interpreter
(`python -m fastnn.bench.worker NAME`) that answers one JSON line per request.
The parent only schedules and collects: it imports none of the measured
libraries (not even NumPy, whose OpenBLAS starts its threads on import), so no
thread pool of its own competes with the workers. Only one worker computes at
a time; before the next one starts, the parent waits until the previous one's
threads have stopped spinning.
"""
import json
import os
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time

# A round counts as quiet when other processes used at most this share of the CPUs.
QUIET_SHARE = 0.10
# Libraries the parent must never import: their presence in sys.modules is reported.
MEASURED_MODULES = ("numpy", "torch", "jax", "sklearn", "numba", "fastnn._core")
# Set on some machines to work around an old OpenBLAS CPU detection; they slow NumPy's best kernels.
UNSET_FOR_WORKERS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class WorkerError(Exception):
    """A request failed: the worker raised (it lives on), died, or timed out (both end it)."""


def worker_environment():
    """(environment for the workers, the variables removed from it and their values)."""
    env = dict(os.environ)
    removed = {name: env.pop(name) for name in UNSET_FOR_WORKERS if name in env}
    # The workers import the same fastnn as this process, even from a source checkout.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env, removed


class Worker:
    """One child process speaking JSON lines: request(cmd, ...) -> reply dict."""

    def __init__(self, name, argv, env=None):
        self.name, self.error = name, None
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env)
        self._buffer = b""

    @classmethod
    def start(cls, name, env=None):
        return cls(name, [sys.executable, "-m", "fastnn.bench.worker", name], env)

    @property
    def alive(self):
        return self.error is None

    def request(self, cmd, timeout, **args):
        """Send one request and wait at most `timeout` seconds for its reply."""
        if self.error:
            raise WorkerError(self.error)
        try:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            self._fail(f"died (exit status {self.proc.wait()}) before {cmd!r}")
        reply = json.loads(self._readline(cmd, timeout))
        if not reply.get("ok"):
            raise WorkerError(reply.get("error", "failed"))
        return reply

    def _readline(self, cmd, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.proc.kill()
                    self.proc.wait()
                    self._fail(f"timed out after {timeout:g} s in {cmd!r}")
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self._fail(f"died (exit status {self.proc.wait()}) in {cmd!r}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _fail(self, what):
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        self.error = what + (": " + " | ".join(tail) if tail else "")
        raise WorkerError(self.error)

    def cpu_seconds(self):
        """CPU time of all the worker's threads so far (0 once it has gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0.0

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def settle(worker, max_wait):
    """Wait (at most max_wait s) until `worker` uses less than a fifth of a CPU:
    OpenMP and OpenBLAS workers keep spinning for a while after a call, on the
    cores the next worker needs."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        cpu, wall = worker.cpu_seconds(), time.perf_counter()
        time.sleep(0.01)
        if (worker.cpu_seconds() - cpu) / (time.perf_counter() - wall) < 0.2:
            return


def _cpu_snapshot(workers):
    """(CPU seconds the whole machine was busy, CPU seconds of this process and its workers), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / _CLOCK_TICK  # user..steal, without guest time
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime + sum(w.cpu_seconds() for w in workers)


def other_share(start, end, wall, cpus):
    """Share of the machine's CPU time that other processes used between two snapshots."""
    if not start or not end or wall <= 0:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (wall * cpus))


class CpuMeter:
    """Other processes' share of the CPUs over a span (start() ... share())."""

    def __init__(self, workers, cpus):
        self.workers, self.cpus = workers, max(1, cpus)
        self.start()

    def start(self):
        self._t, self._snap = time.perf_counter(), _cpu_snapshot(self.workers)

    def share(self):
        return other_share(self._snap, _cpu_snapshot(self.workers), time.perf_counter() - self._t, self.cpus)


def interleave(workers, make_request, reps, max_reps, cpus, pause, timeout, log=None):
    """Rounds in which every worker runs once, one at a time, in a rotating order.

    make_request(worker, round) -> (cmd, args). Each round is charged with the
    CPU share other processes took meanwhile; while fewer than `reps` rounds
    were quiet, more run (up to max_reps), and the `reps` quietest are kept,
    whole, so every worker is judged on the same rounds. A worker whose
    request fails drops out of the later rounds; the others go on.
    Returns {"rounds": [{worker: reply}], "shares_kept", "shares_all", "errors": {worker: message}}.
    """
    rounds, shares, errors = [], [], {}
    meter = CpuMeter(workers, cpus)
    while True:
        live = [w for w in workers if w.alive and w.name not in errors]
        k = len(rounds) % len(live) if live else 0
        got, previous = {}, None
        meter.start()
        for w in live[k:] + live[:k]:
            if previous is not None:
                settle(previous, pause)
            cmd, args = make_request(w, len(rounds))
            try:
                got[w.name] = w.request(cmd, timeout, **args)
            except WorkerError as exc:
                errors[w.name] = str(exc)
            previous = w
        rounds.append(got)
        shares.append(meter.share())
        if log:
            log(len(rounds), got)
        n = len(rounds)
        unknown = any(v is None for v in shares)
        if not live or n >= max(reps, max_reps) or (n >= reps and (unknown or
                                                                  sum(v <= QUIET_SHARE for v in shares) >= reps)):
            break
    if any(v is None for v in shares):
        keep = list(range(len(rounds)))[:max(reps, 1)]
    else:
        keep = sorted(sorted(range(len(rounds)), key=lambda i: shares[i])[:reps])
    return {"rounds": [rounds[i] for i in keep], "shares_kept": [_round3(shares[i]) for i in keep],
            "shares_all": [_round3(v) for v in shares], "errors": errors}


def _round3(v):
    return None if v is None else round(v, 3)


def median(values):
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def samples(rounds, name, key="seconds"):
    """The values of `key` that worker `name` replied, round by round (where it replied)."""
    return [rd[name][key] for rd in rounds if name in rd and rd[name].get(key) is not None]


def paired_ratio(rounds, numerator, denominator, key="seconds"):
    """Median over the rounds of numerator's value / denominator's value in the same round:
    paired, so that a slow phase of the machine hits both sides of the ratio."""
    return median([rd[numerator][key] / rd[denominator][key] for rd in rounds
                   if numerator in rd and denominator in rd and rd[denominator].get(key)
                   and rd[numerator].get(key) is not None])


def measured_imports():
    """Which measured libraries this (parent) process has imported: none, if the isolation holds."""
    return [m for m in MEASURED_MODULES if m in sys.modules]


def _cpuinfo():
    info, cores, phys = {}, set(), None
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key in ("model name", "cpu family", "model", "stepping", "flags", "vendor_id") and key not in info:
            info[key] = value
        if key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    if cores:
        info["physical_cores"] = len(cores)
    return info


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info():
    """CPU model, ISA flags, cores, memory, OS and library versions, read without importing the libraries."""
    import platform
    from importlib import metadata
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for dist in ("fastnn", "numpy", "numba", "llvmlite", "torch", "jax", "jaxlib", "scikit-learn", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_family_model": f"family {cpu.get('cpu family')} model {cpu.get('model')} stepping {cpu.get('stepping')}"
        if cpu.get("cpu family") else None,
        "isa_flags": [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
                                  "avx512_vnni", "amx_tile") if f in flags],
        "logical_cpus": os.cpu_count(), "physical_cores": cpu.get("physical_cores"), "usable_cpus": usable_cpus(),
        "memory_gib": mem_gib, "os": platform.platform(), "versions": versions,
    }
