"""`convlab serve`: an inference server for runs, variants and .onnx files, and its web app."""
