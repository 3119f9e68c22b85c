"""Shipping models: checkpoint averaging, ensembles, ONNX export. Submodules are imported on use, so that
importing this package pulls in no optional dependency."""
