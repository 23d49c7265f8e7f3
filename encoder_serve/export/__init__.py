"""From a trained checkpoint to a verified, optimized, self-describing model package.

    onnx_export   PyTorch -> ONNX (dynamic batch and sequence axes)
    optimize      ONNX Runtime's transformer fusions, applied offline and counted
    verify        onnx.checker, ORT vs PyTorch, and padding / batch-neighbour invariance
    quantize      dynamic and static INT8, and the quality gate that decides what ships
    build         the pipeline: build_package(checkpoint_dir, package_dir, ...)
    bench         the model benchmark (PyTorch vs ORT fp32 / optimized / INT8)
    commands      `encoder-serve export` and `encoder-serve bench-model`

ONNX Runtime sessions and batched logits come from `encoder_serve.onnx_runtime`, shared with the service.
"""
