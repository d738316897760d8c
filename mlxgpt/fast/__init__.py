"""The fast path: every trick that exists only to make MLX fast on one backend, in one room.

The textbook path (model.py, training.py, generate.py, sampling.py) never names a
device, a stream or a BLAS. What is here plugs into it. `--plain` turns off what changes
how a step or a token is computed (streams.py, decoding.py, and configure_device's
tuning), so the plain path stays runnable and tested against this one; the BLAS preload
and the JIT flags only make the same kernels faster and stay on:

    blas.py      load OpenBLAS/MKL before mlx.core on Linux (import mlxgpt does this)
    jit.py       compiler flags for MLX's run-time CPU kernels (mlxgpt's commands do this)
    device.py    the device's name; CPU streams, BLAS threads, buffer cache for a run
    streams.py   the training step split over CPU streams (shards, padding, dealt updates)
    decoding.py  compiled one-token decoding with a fixed-shape cache; single-row matmuls;
                 the fused attention kernel on a GPU

Each trick says what it measured and which upstream MLX behaviour it works around;
docs/benchmarks.md has the runs. This package's __init__ imports nothing, so that
`import mlxgpt` can load fast/blas.py before mlx.core.
"""
