"""Shared test set-up: one torch thread (a busy second core makes two threads far slower)."""
import torch

torch.set_num_threads(1)
