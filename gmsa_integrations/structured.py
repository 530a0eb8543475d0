"""`ChatGMSA.with_structured_output`: answers decoded under a JSON schema (`gmsa.decode.structured`), then parsed.

Every method constrains decoding, so a reply is valid JSON for the schema once it ends (a reply cut by
`max_tokens` is not, and fails to parse):
  - "json_schema" (the default) and "function_calling": the schema's JSON (GMSA has no tool calls; the schema is
    what a tool call would carry);
  - "json_mode": the schema's JSON when one is given, else any JSON object.
"""

from __future__ import annotations

from typing import Any

from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass

from gmsa.decode.structured import ANY_JSON_OBJECT

METHODS = ("json_schema", "function_calling", "json_mode")


def decoding_schema(schema: Any) -> dict:
    """The JSON schema replies are decoded under: a JSON schema dict as given (a title is optional), any other form
    (pydantic class, TypedDict, OpenAI function dict) converted by LangChain."""
    if schema is None:
        return ANY_JSON_OBJECT
    if isinstance(schema, dict) and ("type" in schema or "properties" in schema or "anyOf" in schema):
        return schema
    return convert_to_json_schema(schema)


def structured_output(llm: Any, schema: Any, method: str, include_raw: bool, strict: bool | None) -> Runnable:
    """`llm` bound to decode JSON for `schema`, piped into the parser that returns it (a pydantic object for a
    pydantic class, else a dict); with `include_raw`, a dict of raw message, parsed value and parsing error."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one ChatGMSA supports: {', '.join(METHODS)}")
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema (a pydantic class, a TypedDict or a JSON schema dict)")
    bound = llm.bind(response_format=decoding_schema(schema),
                     ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                                  "schema": schema if schema is not None else ANY_JSON_OBJECT})
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([failed], exception_key="parsing_error")
