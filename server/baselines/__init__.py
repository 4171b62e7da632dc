"""Baselines FedGRPO is compared against that are not GRPO runs (see benchmarks/paper_table.py)."""
