import os

# Sleep-waiting OpenMP threads (see app/cli.py): set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
