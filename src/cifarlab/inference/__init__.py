"""Using a trained checkpoint outside training: predict.py, export.py and the temperature.

- ``trained``: the checkpoint's bare network with its classes and normalization;
- ``inputs``: the files ``input=`` names; ``predict``: their predictions, predictions.csv/.json;
- ``export``: the network as a state_dict, TorchScript or ONNX file with its JSON sidecar;
- ``calibration``: temperature scaling, fitted on validation and stored beside the checkpoint.
"""
