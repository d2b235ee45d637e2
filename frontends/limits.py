"""The most a model may ask of masic, for every frontend: a small file can declare values whose cost is out of all
proportion to its size (a 17 KB NIR file whose Delay spans 10^10 steps, a conv padded by 10^6, a zip member that
inflates to gigabytes). Each limit bounds the memory or work one such value implies; a model beyond one is refused
in one line naming the file, the node and the limit, before the cost is paid. The limits sit far above the models
masic is built for: vgg19's largest weight (25088 x 4096) is 0.38 of the tensor limit, MobileNetV2 (the zoo's
largest graph, 153 nodes) 0.07 of the node limit.

A Delay of N steps is N one-step `delay` nodes in the IR, each holding a copy of the value and copying it on every
step (O(N) nodes, state and copies a step). A ring buffer of N slots would need the same state but one node and one
copy a step; until the IR has one, `MAX_DELAY_STEPS` bounds N.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from masic.frontends.errors import FrontendError

# Every frontend: checked by `GraphBuilder` on each node it adds, so Norse, torch.export and NIR models alike.
MAX_TENSOR_ELEMENTS = 1 << 28  # elements of one value, parameter or padded conv/pool input: 1 GiB of float32, and
#                                 within the int32 index range the generated kernels use
MAX_GRAPH_NODES = 2048  # IR nodes of one timestep: planning time grows with them (a chain of this size plans in
#                         2 s without a budget and 75 s under a 200 KB one, on one core of this 2-core machine)
MAX_WINDOW = 1 << 16  # a conv's or pool's kernel, stride, dilation and padding along one axis

# NIR files (`masic.frontends.nir`)
MAX_HDF5_OBJECTS = 100_000  # groups and datasets in one file
MAX_HDF5_DEPTH = 64  # groups nested in one another (a NIR subgraph nests two: nodes/<name>)
MAX_FILE_ELEMENTS = 1 << 30  # elements of all datasets together: 4 GiB of float32
MAX_NIR_NODES = 4096  # nodes of the flattened graph (every subgraph's nodes)
MAX_NIR_EDGES = 16_384  # edges of the flattened graph
MAX_DELAY_STEPS = 1024  # steps of dt one Delay spans: each step is one IR node and one copy of the value a step

# PyTorch archives (`.pt` from torch.save, `.pt2` from torch.export.save)
MAX_ARCHIVE_BYTES = 4 << 30  # the file, and its members' sizes once decompressed, together


def check_archive_size(path: Path, archive: zipfile.ZipFile) -> None:
    """A PyTorch archive of at most `MAX_ARCHIVE_BYTES`, as a file and with its members decompressed (a small
    deflated member can inflate to gigabytes, which a reader allocates at once)."""
    unpacked = sum(info.file_size for info in archive.infolist())
    if max(path.stat().st_size, unpacked) > MAX_ARCHIVE_BYTES:
        raise FrontendError(
            f"{path} holds {unpacked} bytes once decompressed; masic reads archives of at most "
            f"{MAX_ARCHIVE_BYTES >> 30} GiB"
        )
