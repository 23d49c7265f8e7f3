"""MLServer 1.7: a custom inference runtime (the documented way to serve a model MLServer has no runtime
for), with MLServer's adaptive batching configured in mlserver/model-settings.json.

The request is the Open Inference Protocol (V2): one BYTES input "text" of shape [n], decoded with
MLServer's string codec. The answer has two outputs: "label" (BYTES [n], the most likely label) and
"scores" (FP32 [n, num_labels], columns in the order of the "labels" parameter of the model settings,
which is the manifest's order). Adaptive batching concatenates the inputs of concurrent requests along
the first axis, calls `predict` once, and splits every output back along the same axis.

    PEER_PACKAGE=... PEER_PRECISION=int8 PEER_THREADS=2 MLSERVER_PARALLEL_WORKERS=1 MLSERVER_HTTP_PORT=8080 \
        mlserver start mlserver
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_model import Classifier


class EmotionRuntime(MLModel):
    async def load(self) -> bool:
        self.model = Classifier()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        probs = self.model.probabilities(texts)
        labels = [self.model.labels[i] for i in np.argmax(probs, axis=-1)]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[
            StringCodec.encode_output("label", labels),
            NumpyCodec.encode_output("scores", probs),
        ])
