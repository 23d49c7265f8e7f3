"""Request and response models of the /v1 API: the contract, as it shows in OpenAPI.

Limits (inputs per request, characters per input, top_k) come from the settings and the model, so the
request model is built once at start-up with them as `Field` constraints: one place validates them and
the OpenAPI document shows the real numbers. Validation is strict (no "3" for 3, no unknown fields).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError


def _not_blank(text: str) -> str:
    if text.isspace():
        raise PydanticCustomError("blank_text", "must not be whitespace only")
    return text


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def classify_request_model(max_inputs: int, max_chars: int, num_labels: int) -> type[BaseModel]:
    text = Annotated[str, StringConstraints(min_length=1, max_length=max_chars), AfterValidator(_not_blank)]
    text_schema = {"type": "string", "minLength": 1, "maxLength": max_chars}
    inputs = Annotated[
        list[text],
        BeforeValidator(_one_or_many),
        Field(min_length=1, max_length=max_inputs,
              description=f"One text, or a list of 1 to {max_inputs} texts (each 1 to {max_chars} characters, "
                          "not whitespace only). A single string is answered like a one-element list."),
        WithJsonSchema({"anyOf": [text_schema, {"type": "array", "items": text_schema, "minItems": 1,
                                                "maxItems": max_inputs}]}),
    ]
    return create_model(
        "ClassifyRequest",
        __config__=ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
            {"inputs": ["i feel wonderful today", "this is so unfair"], "top_k": 2}]}),
        inputs=(inputs, ...),
        top_k=(int | None, Field(None, ge=1, le=num_labels,
                                 description="Return only the k most likely labels (default: all).")),
        truncate=(bool, Field(True, description="Truncate texts longer than the model's max length; "
                                                "false answers 422 naming the input instead.")),
    )


def explain_request_model(max_chars: int, layers: int, heads: int) -> type[BaseModel]:
    text = Annotated[str, StringConstraints(min_length=1, max_length=max_chars), AfterValidator(_not_blank),
                     Field(description=f"One text (1 to {max_chars} characters, not whitespace only).")]
    return create_model(
        "ExplainRequest",
        __config__=ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
            {"inputs": "i feel wonderful today", "query_key": True, "layer": 0, "head": 1}]}),
        inputs=(text, ...),
        truncate=(bool, Field(True, description="Truncate a text longer than the model's max length; false "
                                                "answers 422 instead.")),
        query_key=(bool, Field(False, description="Also return, for one layer and head, each token's query and "
                                                  "key vectors and their scaled dot products.")),
        layer=(int, Field(0, ge=0, lt=layers, description=f"The layer of the query-key view (0 to {layers - 1}).")),
        head=(int, Field(0, ge=0, lt=heads, description=f"The head of the query-key view (0 to {heads - 1}).")),
    )


class Prediction(BaseModel):
    label: str
    score: float = Field(description="Softmax probability.")


class ClassifyResponse(BaseModel):
    model: str = Field(description="name@version of the model that answered.", examples=["emotion@1.1.0"])
    predictions: list[list[Prediction]] = Field(
        description="One list per input, in input order, labels sorted by score (highest first).")


class ModelCard(BaseModel):
    name: str
    version: str
    ref: str
    precision: str = Field(description="The precision being served (fp32 or int8).")
    labels: list[str]
    max_length: int
    precisions: dict[str, Any] = Field(description="Every precision in the package, servable or not, and why.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Quality measured at export.")


class ModelsResponse(BaseModel):
    models: list[ModelCard]


class ErrorDetail(BaseModel):
    field: str = Field(examples=["inputs[3]"])
    message: str


class Error(BaseModel):
    type: str = Field(examples=["validation_error"])
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this shape."""
    error: Error


class Attention(BaseModel):
    layers: int
    heads: int
    weights: list[list[list[list[float]]]] = Field(
        description="[layer][head][i][j]: how much token i attends to token j; each row sums to 1.")


class QueryKey(BaseModel):
    layer: int
    head: int
    queries: list[list[float]] = Field(description="[i]: token i's query vector for this head.")
    keys: list[list[float]] = Field(description="[j]: token j's key vector for this head.")
    scores: list[list[float]] = Field(description="[i][j]: query i . key j / sqrt(head size), before the softmax "
                                                  "(a relative-position model adds its position bias to these).")


class ExplainResponse(BaseModel):
    model: str = Field(examples=["emotion@1.2.0"])
    tokens: list[str] = Field(description="The model's tokens, [CLS] and [SEP] included.", examples=[
        ["[CLS]", "i", "feel", "wonderful", "today", "[SEP]"]])
    truncated: bool = Field(description="The text was longer than the model's max length and was cut.")
    predictions: list[Prediction] = Field(description="Labels sorted by score (highest first).")
    attention: Attention
    query_key: QueryKey | None = None
