"""The offline model zoo: tiny causal LMs we build and train, plus loaders for any HF model."""
