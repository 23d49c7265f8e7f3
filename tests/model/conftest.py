"""Model tests share 2 CPU cores with everything else: one torch thread, so no thread ever spins waiting."""

import torch

torch.set_num_threads(1)
