"""Scale-out: several processes (GPUs, machines) run one experiment, launched by ``accelerate launch`` or
``torchrun``. Prompts are split with accelerate's ``PartialState.split_between_processes``; each process adds
its runs to its own probe statistics, which are then summed over all processes (all-reduce), so every
process fits exactly the probes one process would have fitted from all runs. A single process needs none
of this: every function here is then a no-op.
"""

from __future__ import annotations

class Dist:
    def __init__(self):
        import os

        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # without cpu=True accelerate does not form a multi-CPU (gloo) group on a machine without CUDA
            self.state = PartialState(cpu=not torch.cuda.is_available())

    @property
    def world(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def rank(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This process's share of ``items`` (contiguous, as accelerate splits them)."""
        if not self.state:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def barrier(self) -> None:
        if self.state:
            self.state.wait_for_everyone()

    def all_reduce_stats(self, st):
        """Sum ProbeStats over all processes, in place, where they live: on each process's device (NCCL wants
        CUDA tensors, gloo CPU ones). A process without runs contributes zeros of the others' shapes."""
        if not self.state:
            return st
        import torch
        import torch.distributed as td

        from ..probing.stats import FIELDS

        shapes = {(layer, name): tuple(getattr(st, name)[layer].shape) for layer in st.n for name in FIELDS}
        everyone: list = [None] * self.world
        td.all_gather_object(everyone, shapes)
        union: dict = {}
        for d in everyone:
            union.update(d)
        for layer, name in sorted(union):
            arrays = getattr(st, name)
            if layer not in arrays:
                arrays[layer] = torch.zeros(union[(layer, name)], dtype=torch.float64, device=st.device)
            td.all_reduce(arrays[layer], op=td.ReduceOp.SUM)
        n = torch.tensor([st.images], dtype=torch.int64, device=st.device)
        td.all_reduce(n, op=td.ReduceOp.SUM)
        st.images = int(n.item())
        return st

    def gather_rows(self, rows: list[dict]) -> list[dict]:
        if not self.state:
            return rows
        import torch.distributed as td

        everyone: list = [None] * self.world
        td.all_gather_object(everyone, rows)
        return [r for part in everyone for r in part]
