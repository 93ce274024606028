"""The default offload server: the Open Inference Protocol over REST with dynamic batching.

``edgefleet offload serve --model NAME=path.onnx --listen host:port`` serves ONNX models to the
agents' offload clients on one machine. Past one machine the same clients talk to Triton or
KServe instead (docs/offload.md). One module per concern:

- :mod:`.oip`: request and response bodies (JSON and the binary tensor extension), pure functions;
- :mod:`.runtime`: ONNX Runtime sessions (CUDA when present, else the CPU), the one import of it;
- :mod:`.batcher`: the dynamic batcher (queue, delay, deadline, merge and split);
- :mod:`.metrics`: Triton-named Prometheus metrics;
- :mod:`.server`: the Starlette app and the graceful drain;
- :mod:`.command`: the ``edgefleet offload serve`` command line.
"""
