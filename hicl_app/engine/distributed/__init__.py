"""Data-parallel stages on torch's own engine: torchrun launches the ranks, DDP syncs gradients.

Why torchrun (`torch.distributed.run`) rather than `accelerate launch`: it ships with torch, so
it adds no dependency and no config file, its elastic agent already does what a dead rank needs
(it stops the others and exits non-zero, so a stage never hangs), and its multi-node flags
(`--nnodes`, `--rdzv-endpoint`) pass through unchanged. DDP (`DistributedDataParallel`) does the
gradient all-reduce; hicl only decides which slice of each global batch a rank trains on.

The pieces: `launch` runs in the caller's process (the worker's job process): it starts torchrun
and relays, over a loopback socket, the events rank 0 reports and the stop the caller asks for.
`rank` is the program each rank runs. `comm` is what the training loop and evaluation ask of
the process group; in a single process every call there is a no-op, so the same code runs both.
"""
