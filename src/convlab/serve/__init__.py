"""`convlab serve`: an inference server speaking the Open Inference Protocol (v2), with dynamic batching.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client); nothing outside this part
imports it, so the base install works without them. create_app builds the application from served models.
"""
