"""How a run is stopped: raised by the backends and the executors inside a pass, caught by the runner.

A leaf module (it imports nothing of ours), so that everything below the runner can raise these without importing
the runner.
"""


class Interrupted(Exception):
    """The user asked to stop: the pass in flight is discarded, the finished ones are kept."""


class Skipped(Exception):
    """The user skipped the pass in flight: the item keeps its last image and goes on."""


class ExecutorFailed(Exception):
    """What runs the passes broke mid-run (the Ray cluster was lost): the run stops as after an interrupt, keeping
    what it finished, and the message says why."""
