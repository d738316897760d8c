"""`python -m mlxgpt train|generate ...`"""

import sys

from mlxgpt.fast.device import pin_rank_to_gpu

pin_rank_to_gpu()  # a rank of `mlxgpt launch` on a multi-GPU machine takes its own GPU, before MLX starts CUDA

from mlxgpt.cli import main

sys.exit(main())
