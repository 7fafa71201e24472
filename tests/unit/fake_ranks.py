"""Threads standing in for data-parallel processes, for the ``reduce=`` argument of mplus.algo:
each thread's ``reduce`` sums every thread's tensor (in rank order), as
``torch.distributed.all_reduce`` would."""

from __future__ import annotations

import threading

import torch


class Ranks:
    """``n`` threads standing in for ``n`` data-parallel processes."""

    def __init__(self, n: int):
        self.n, self._barrier, self._slots = n, threading.Barrier(n, timeout=30), [None] * n
        self.calls = 0

    def reduce(self, r: int):
        def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
            self._slots[r] = t.detach().clone()
            self._barrier.wait()
            out = self._slots[0].clone()
            for s in self._slots[1:]:
                out = out + s
            if r == 0:
                self.calls += 1
            self._barrier.wait()  # nobody overwrites a slot before every rank has read it
            return out

        return sum_over_ranks

    def run(self, fn):
        """``[fn(rank, reduce) for each rank]``, the ranks running concurrently."""
        out, errors = [None] * self.n, []

        def target(r):
            try:
                out[r] = fn(r, self.reduce(r))
            except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
                errors.append(e)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
        return out
