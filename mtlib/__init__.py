"""mtlib: one BERT encoder, three tasks (SST-5, Quora, STS-B), and the methods of the
CS224N 2023 report "BERT: A Master of All Trades or Jack of None?", done right.

Modules, in the order data flows through them: config, data, encode, backbone, heads,
model, samplers, updates, gradients, smart, pal, pretrain, train, evaluate, adjust, run,
report, figures.
"""

__version__ = "0.1.0"
