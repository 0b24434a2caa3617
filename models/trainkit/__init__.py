"""Training kit shared by the models' train.py and fit_prior.py scripts (not part of the runtime codec).

- `runtime`: torchrun/DDP start-up, rank-0 decisions broadcast to all ranks, sync check.
- `checkpoint`: sharded, pickle-free safetensors checkpoints and flat optimizer state.
- `schedule`: learning rate as a function of the global step only (never wall time).
- `logger`: a log file that starts with the command and the full config.
- `corpus`: training-file discovery that refuses the development set.
- `images`: training photos in memory and seeded random crops (mcquic, vqgan).
- `priors`: the prior-fitting driver (index packets -> integer priors -> the shipped weights file).
"""
