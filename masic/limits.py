"""The limits masic enforces on what it is given, in one place; each is refused with one line that states it.

The command line and the manifest reader enforce these names, and any other part of masic that bounds the same
quantity imports them from here, so a limit is changed here and nowhere else (the README's Limits list them).
"""

from __future__ import annotations

# Timesteps per inference (`--timesteps`, `--min-timesteps`, `--exit-stable`, a manifest's `timesteps`). A million
# steps is hours of a real-time SNN at 1 ms steps, far past any model masic compiles; the bound keeps every count
# the loader holds in int32_t and every per-step table the tools build small.
MAX_TIMESTEPS = 1_000_000

# The largest value of the loader's int32_t counters (masic_exit_rule_t.min_timesteps, the stable-argmax steps).
MAX_INT32 = 2**31 - 1

# Byte counts (budgets, arena and weights sizes): the loader keeps them in int64_t.
MAX_BYTES = 2**63 - 1

# manifest.json is a few kilobytes per hundred buffers; a file past this is not one masic wrote.
MAX_MANIFEST_BYTES = 64 << 20
