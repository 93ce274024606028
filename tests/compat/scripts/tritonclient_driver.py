"""Call an OIP server with tritonclient[http] and print what happened as one JSON object.

Runs inside the tritonclient virtual environment (tests/compat/requirements/tritonclient.txt):
tritonclient's generated protobuf package ``inference`` clashes with KServe's and MLServer's.

    python tests/compat/scripts/tritonclient_driver.py --url 127.0.0.1:8000 --model digits-cloud \
        --input batch.npy [--binary] [--request-id ID]

Prints ``{"live", "ready", "model_ready", "server", "model", "infer"}`` where ``infer`` is
``{"id", "model_name", "model_version", "outputs": {name: {"shape", "datatype", "data"}}}`` or
``{"error", "status"}`` when the server refused the call (tritonclient's own exception).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype


def infer(
    client: httpclient.InferenceServerClient,
    model: str,
    batch: np.ndarray,
    input_name: str,
    output_names: list[str],
    binary: bool,
    request_id: str,
) -> dict[str, Any]:
    tensor = httpclient.InferInput(input_name, list(batch.shape), np_to_triton_dtype(batch.dtype))
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in output_names]
    try:
        result = client.infer(model, [tensor], outputs=wanted, request_id=request_id)
    except InferenceServerException as exc:
        return {"error": exc.message(), "status": exc.status()}
    response = result.get_response()
    outputs = {}
    for name in output_names:
        array = result.as_numpy(name)
        outputs[name] = {
            "shape": list(array.shape),
            "datatype": np_to_triton_dtype(array.dtype),
            "data": array.ravel().tolist(),
        }
    return {
        "id": response.get("id"),
        "model_name": response.get("model_name"),
        "model_version": response.get("model_version"),
        "binary": [
            "binary_data_size" in (spec.get("parameters") or {}) for spec in response["outputs"]
        ],
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="host:port")
    parser.add_argument("--model", default="digits-cloud")
    parser.add_argument("--input", required=True, help="a .npy file: the batch to infer")
    parser.add_argument("--input-name", default="input")
    parser.add_argument("--binary", action="store_true", help="binary tensor extension")
    parser.add_argument("--request-id", default="compat-1")
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(url=args.url, network_timeout=60.0)
    report: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(),
    }
    try:
        report["model"] = client.get_model_metadata(args.model)
        report["model_ready"] = client.is_model_ready(args.model)
        outputs = [o["name"] for o in report["model"]["outputs"]]
    except InferenceServerException as exc:
        report["model"] = {"error": exc.message(), "status": exc.status()}
        report["model_ready"] = False
        outputs = ["probabilities"]
    batch = np.load(args.input)
    report["infer"] = infer(
        client, args.model, batch, args.input_name, outputs, args.binary, args.request_id
    )
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
