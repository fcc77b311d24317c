"""The allocator tuning of fusion_explorer.memory, each case in a fresh process (it is process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only"
)

# make, use and drop three 30 x 512 x 512 float32 temporaries (31 MB each), as a layer on a
# 512x512 scene does, and print how much freed memory the heap then holds for the next ones. (Page
# faults themselves are what costs time, but on this machine the kernel's own reclaim makes their
# count vary from run to run; what the heap keeps does not.)
SCRIPT = """
import ctypes, sys
from fusion_explorer.memory import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tune" else False
import torch
torch.set_num_threads(1)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
x = torch.rand(30, 512 * 512)
for _ in range(3):
    y = [x * 2 for _ in range(3)]
    mapped = libc.mallinfo2().hblkhd
    del y
print(tuned, mapped / 2**20, libc.mallinfo2().fordblks / 2**20)
"""


def _run(mode: str, **env: str) -> tuple[bool, float, float]:
    """``(tuned, MB of blocks served by mmap while the temporaries live, MB free in the heap after)``."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, check=True).stdout.split()
    return out[0] == "True", float(out[1]), float(out[2])


def test_tuned_allocator_keeps_freed_temporaries_for_reuse():
    tuned, mapped_tuned, kept_tuned = _run("tune")
    untouched, mapped_default, _ = _run("leave")
    assert tuned and not untouched
    block = 30 * 512 * 512 * 4 / 2**20
    # glibc's defaults serve the first such block (x) by mmap, and trim the heap's free top past
    # twice the largest block freed so far, so later temporaries are often faulted in anew (how
    # much it keeps varied from 30 to 120 MB between runs here); tuned, every block comes from the
    # heap and all three freed ones stay there
    assert mapped_default >= block
    assert mapped_tuned < 1  # MB: small blocks mapped before the tuning, none of the temporaries
    assert kept_tuned >= 3 * block - 1


def test_environment_variable_turns_the_tuning_off():
    tuned, mapped, _ = _run("tune", FUSION_EXPLORER_MALLOC="default")
    assert not tuned and mapped > 0
