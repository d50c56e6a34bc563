"""Speed and memory benchmarks, run from the project root as ``python -m benchmarks.<name>``."""
