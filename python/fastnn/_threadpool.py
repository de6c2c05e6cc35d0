"""fastnn's thread pool as threadpoolctl sees it.

threadpoolctl lists and caps the native thread pools of the libraries a process
has loaded. It does not know fastnn's own pool, so fastnn registers a controller
for it -- as soon as threadpoolctl is imported, without importing threadpoolctl
itself (it costs more than all of `import fastnn`).
"""
import importlib.abc
import importlib.util
import sys


def register(threadpoolctl):
    """Teach threadpoolctl fastnn's pool: threadpool_info() lists it, threadpool_limits() caps it."""
    if not hasattr(threadpoolctl, "register"):  # older threadpoolctl has no API for this
        return
    try:
        from . import _core  # threadpoolctl finds only libraries that are loaded
    except ImportError:  # no C++ backend here: no pool to show
        return

    class FastnnController(threadpoolctl.LibController):
        user_api = "fastnn"
        internal_api = "fastnn"
        filename_prefixes = ("_core",)
        # Other packages' extensions may be called _core too: this symbol tells ours apart.
        check_symbols = ("fastnn_get_num_threads",)

        def get_num_threads(self):
            return self.dynlib.fastnn_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.fastnn_set_num_threads(int(num_threads))

        def get_version(self):
            return _core.version()

    threadpoolctl.register(FastnnController)


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps threadpoolctl's own loader so that register() runs after it."""

    def find_spec(self, name, path=None, target=None):
        if name != "threadpoolctl":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            register(module)

        spec.loader.exec_module = exec_and_register
        return spec


def install():
    """Register now if threadpoolctl is loaded, else when it is imported."""
    if "threadpoolctl" in sys.modules:
        register(sys.modules["threadpoolctl"])
    elif not any(isinstance(f, _RegisterWhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenImported())
