"""fastnn's threads among the user's: fork, concurrent callers, threadpoolctl.

Each case runs in a fresh interpreter (a clean pool, a clean fork) under a
timeout, so a hang fails its test instead of blocking the suite.
"""
import os
import subprocess
import sys
import textwrap

import pytest

import fastnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240


def run_python(code, env=None, timeout=TIMEOUT):
    """Runs code in a new interpreter; returns its stdout. A hang or a failure fails the test."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(fastnn.__file__)),
                                                         full_env.get("PYTHONPATH")) if p)
    try:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {timeout} s; output so far:\n{exc.stdout}\n{exc.stderr}")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


# Parallel kernels of every kind (GEMM, the sparse path with its team barrier,
# row-parallel softmax and losses, elementwise, an optimizer step), at sizes
# where each backend splits the work across threads. results() computes all
# of them; a child compares its own results with its parent's, bit for bit.
KERNELS = """
import os, sys, threading, multiprocessing
import numpy as np
import fastnn, fastnn.functional as F
rng = np.random.default_rng(0)
a = rng.standard_normal((512, 784)).astype(np.float32)
W = rng.standard_normal((784, 512)).astype(np.float32)
sparse_x = np.where(rng.random((256, 784)) < 0.8, 0, rng.random((256, 784))).astype(np.float32)
logits = rng.standard_normal((4096, 1000)).astype(np.float32)
labels = rng.integers(0, 1000, 4096)
big = rng.standard_normal(1 << 22).astype(np.float32)

def results():
    from fastnn import optim
    loss, dlogits = F.softmax_cross_entropy(logits, labels)
    dx, dW, db = F.linear_backward(a, W, np.ones((512, 512), np.float32))
    p = fastnn.nn.Linear(1024, 1024, seed=0).parameters()[0]
    p.grad = np.full_like(p.data, 0.5)
    optim.Adam([p], lr=1e-3).step()
    return [F.matmul(a, W), F.linear(sparse_x, W, None, activation="relu"), F.softmax(logits),
            np.array(loss), dlogits, F.relu(big), F.sigmoid(big), dx, dW, db, p.data.copy()]

def same(got, want):
    return all(np.array_equal(g, w) for g, w in zip(got, want))

def in_child(target):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if target() else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
"""


def backend_env(backend, isa=None):
    env = {"FASTNN_BACKEND": backend}
    if isa:
        env["FASTNN_ISA"] = isa
    return env


FORK_CASES = [("cpp", "avx512"), ("cpp", "avx2"), ("cpp", "generic"), ("numba", None), ("numpy", None)]


@pytest.mark.parametrize("backend,isa", FORK_CASES)
def test_os_fork_child_after_parallel_kernels_in_parent(backend, isa):
    out = run_python(KERNELS + """
want = results()
print("parent", fastnn.backend(), fastnn.info()["isa"], fastnn.info()["threads"])
codes = [in_child(lambda: same(results(), want)),                 # the child's own threads
         in_child(lambda: (fastnn.set_num_threads(1), same(results(), want))[1]),  # serial child
         in_child(lambda: in_child(lambda: same(results(), want)) == 0)]  # a grandchild
print("children", codes)
""", env=backend_env(backend, isa))
    assert f"parent {backend}" in out
    if isa:
        assert f" {isa} " in out
    assert "children [0, 0, 0]" in out


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_fork_before_any_parallel_kernel(backend):
    # The child is the first to run a parallel kernel; the parent then runs its own.
    out = run_python(KERNELS + """
want_child = in_child(lambda: len(results()) == 11)
print("child", want_child, "parent", len(results()))
""", env=backend_env(backend))
    assert "child 0 parent 11" in out


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_multiprocessing_fork_pool_after_parallel_kernels(backend):
    out = run_python(KERNELS + """
def work(seed):
    return [r.tobytes() for r in results()]
if __name__ == "__main__":
    want = [r.tobytes() for r in results()]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(work, range(2))
    print("equal", all(g == want for g in got))
""", env=backend_env(backend))
    assert "equal True" in out


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_fork_from_a_thread_while_another_thread_computes(backend):
    # One thread keeps calling a kernel that fastnn runs on its own threads
    # while another forks: fork waits for the running job, and the child
    # computes correctly. (Not NumPy's matmul, which the other backends use:
    # OpenBLAS's child hangs when another thread was inside it at the fork.)
    out = run_python(KERNELS + """
want = results()
stop = threading.Event()
def busy():
    while not stop.is_set():
        F.matmul(a, W) if fastnn.backend() == "cpp" else F.softmax(logits)
worker = threading.Thread(target=busy)
worker.start()
codes = []
forker = threading.Thread(target=lambda: codes.extend(in_child(lambda: same(results(), want)) for _ in range(3)))
forker.start()
forker.join()
stop.set()
worker.join()
print("children", codes)
""", env=backend_env(backend))
    assert "children [0, 0, 0]" in out


def test_concurrent_callers_share_one_capped_pool():
    # Four Python threads call in at once: the results equal serial calls bit
    # for bit, and fastnn never starts more than num_threads() - 1 workers.
    out = run_python(KERNELS + """
from fastnn import _core
def task_threads():
    return len(os.listdir("/proc/self/task"))
want = F.matmul(a, W)
fastnn.set_num_threads(1)  # stops the pool's workers: count the threads without them
assert _core.pool_workers() == 0
barrier = threading.Barrier(5)
results_by_thread, peak = [], [0]
def call():
    barrier.wait()
    results_by_thread.append(all(np.array_equal(F.matmul(a, W), want) for _ in range(30)))
threads = [threading.Thread(target=call) for _ in range(4)]
for t in threads:
    t.start()
before = task_threads()
fastnn.set_num_threads(2)
barrier.wait()
while any(t.is_alive() for t in threads):
    peak[0] = max(peak[0], task_threads())
for t in threads:
    t.join()
print("identical", all(results_by_thread), len(results_by_thread), "extra", peak[0] - before,
      "workers", _core.pool_workers())
""")
    assert "identical True 4" in out
    extra = int(out.split("extra")[1].split()[0])
    workers = int(out.split("workers")[1].split()[0])
    assert workers == 1 and extra <= 1, out


def test_set_num_threads_stops_and_restarts_workers():
    out = run_python(KERNELS + """
from fastnn import _core
want = F.matmul(a, W)
counts = [_core.pool_workers()]
for n in (1, 3, 2):
    fastnn.set_num_threads(n)
    assert np.array_equal(F.matmul(a, W), want)
    counts.append(_core.pool_workers())
print("workers", counts)
""", env={"FASTNN_NUM_THREADS": "2"})
    assert "workers [1, 0, 2, 1]" in out


THREADPOOLCTL = """
import fastnn, fastnn.functional as F, numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
F.matmul(np.ones((256, 256), np.float32), np.ones((256, 256), np.float32))
pools = [p for p in threadpool_info() if p["internal_api"] == "fastnn"]
print("pools", len(pools), pools[0]["num_threads"])
with threadpool_limits(1):
    print("inside", fastnn.info()["threads"], [p["num_threads"] for p in threadpool_info() if p["user_api"] == "fastnn"])
    assert np.array_equal(F.matmul(np.ones((256, 256), np.float32), np.ones((256, 256), np.float32)),
                          np.full((256, 256), 256, np.float32))
    print("workers inside", fastnn._core.pool_workers())
print("after", fastnn.info()["threads"])
"""


@pytest.mark.parametrize("order", ["fastnn first", "threadpoolctl first"])
def test_threadpoolctl_sees_and_caps_the_pool(order):
    pytest.importorskip("threadpoolctl")
    code = THREADPOOLCTL if order == "fastnn first" else "import threadpoolctl\n" + THREADPOOLCTL
    out = run_python(code, env={"FASTNN_NUM_THREADS": "2", "FASTNN_BACKEND": "cpp"})
    assert "pools 1 2" in out
    assert "inside 1 [1]" in out
    assert "workers inside 0" in out
    assert "after 2" in out
