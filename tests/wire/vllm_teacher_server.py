"""A local server that scores token sequences as vLLM's OpenAI-compatible server does, backed by a real model.

    with VLLMTeacherServer(model, tokenizer) as server:
        train_on_policy(..., teacher=f"vllm:{server.base_url}")

It answers what TRL's `VLLMClient.get_sequence_logprobs` sends (`trl/generation/vllm_client.py`):
`POST /v1/completions` with `prompt` as a list of token-id lists, `max_tokens: 1` and
`prompt_logprobs: k`. Each choice carries vLLM's `prompt_logprobs`: `None` for the first position,
then per position a dict from the token id (as a string) to `{"logprob", "rank", "decoded_token"}`
holding the top k and the token actually there (with its 1-based rank). As in vLLM's default
(`logprobs_mode="raw_logprobs"`) the logprobs are the model's own, not temperature-scaled.
`GET /v1/models`, `GET /health` and `POST /tokenize` (`{"tokens": [...]}`) complete the surface.
"""

from __future__ import annotations

from typing import Any

import torch
from fastapi import FastAPI, Request

from tests.wire.scripted_server import RecordedRequest, ScriptedServer


class VLLMTeacherServer(ScriptedServer):
    def __init__(self, model: Any, tokenizer: Any, *, name: str = "teacher"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        super().__init__()

    def add_routes(self, app: FastAPI) -> None:
        app.add_api_route("/v1/completions", self.completions, methods=["POST"])
        app.add_api_route("/v1/models", self.models, methods=["GET"])
        app.add_api_route("/health", self.health, methods=["GET"])
        app.add_api_route("/tokenize", self.tokenize, methods=["POST"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def health(self) -> dict[str, Any]:
        return {}

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "vllm"}]}

    async def tokenize(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        ids = self.tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
        return {"tokens": list(ids), "count": len(ids), "max_model_len": self.model.config.max_position_embeddings}

    async def completions(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(RecordedRequest(method="POST", path="/v1/completions", headers={}, json=body, query={}))
        prompts = body["prompt"]
        if prompts and isinstance(prompts[0], int):
            prompts = [prompts]
        k = int(body.get("prompt_logprobs") or 0)
        choices = [self._choice(index, ids, k) for index, ids in enumerate(prompts)]
        return {"id": "cmpl-test", "object": "text_completion", "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": len(prompts)}}

    @torch.no_grad()
    def _choice(self, index: int, ids: list[int], k: int) -> dict[str, Any]:
        logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)  # (L, V)
        positions: list[dict[str, Any] | None] = [None]
        for position in range(1, len(ids)):
            row = logprobs[position - 1]
            order = torch.argsort(row, descending=True)
            entries = {}
            for rank, token in enumerate(order[:k].tolist(), start=1):
                entries[str(token)] = self._entry(row, token, rank)
            actual = ids[position]
            if str(actual) not in entries:
                rank = int((row > row[actual]).sum().item()) + 1
                entries[str(actual)] = self._entry(row, actual, rank)
            positions.append(entries)
        following = int(logprobs[-1].argmax().item())
        return {"index": index, "text": self.tokenizer.decode([following]), "logprobs": None,
                "finish_reason": "length", "prompt_logprobs": positions}

    def _entry(self, row: torch.Tensor, token: int, rank: int) -> dict[str, Any]:
        return {"logprob": float(row[token].item()), "rank": rank, "decoded_token": self.tokenizer.decode([token])}
