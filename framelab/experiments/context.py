"""What an experiment receives from the run: settings chosen once, by the command line or the demo.

This is the one way an option reaches an experiment. To add one (say
`--mtu N`): add a field here with a default that keeps today's behaviour,
set it in `cli.context_from()` from the parsed arguments, and read it as
`ctx.mtu` in the experiments it concerns. Options about what the run writes
after it ends (JSON, Markdown, charts) are fields of `engine.Outputs` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: repetitions of each timed step (median), unless the run says otherwise
DEFAULT_ROUNDS = 5
#: repetitions in the short pass (--quick, the demo)
QUICK_ROUNDS = 3


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class RunContext:
    """Run-wide settings, the same for every experiment of one run.

    `rounds`: repetitions for timings (median); `quick`: the short pass;
    `root`: whether claims that need namespaces and captures can be checked,
    asked when the context is made (not once at import, so a test or a
    process that changes its user sees the truth). `sysctls`: the run's
    loopback parts happen in a fresh namespace with these settings; `mtu`:
    links between namespaces get it, and sizes follow the route's MTU.
    """

    rounds: int = DEFAULT_ROUNDS
    quick: bool = False
    root: bool = field(default_factory=running_as_root)
    #: net.* settings of a fresh namespace the whole run happens in (empty: this host's)
    sysctls: tuple[tuple[str, str], ...] = ()
    #: MTU of the links experiments build between namespaces (None: Ethernet's 1500)
    mtu: int | None = None

    @property
    def can_capture(self) -> bool:
        return self.root

    def timing_rounds(self, quick_rounds: int = 2) -> int:
        """How many times to repeat a slow timed step: `rounds`, fewer in the short pass."""
        return max(1, min(self.rounds, quick_rounds) if self.quick else self.rounds)

    @property
    def quiet(self) -> float:
        """Seconds to watch for something that should not come (a segment, an error)."""
        return 0.2 if self.quick else 0.5
