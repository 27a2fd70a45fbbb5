"""convlab.train in the test's own process, as the tests that compare runs call it."""
from __future__ import annotations

import io

import torch
from rich.console import Console

import convlab


def train_in_one_thread(**keywords) -> str:
    """convlab.train on one thread (as the spawned children train, so weights match bit for bit); returns what it
    printed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    console = Console(file=io.StringIO(), width=200)
    try:
        convlab.train(console=console, **keywords)
    finally:
        torch.set_num_threads(threads)
    return console.file.getvalue()
