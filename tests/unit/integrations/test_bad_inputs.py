"""Bad inputs to the integrations: a clear error at construction or at the call, never a silent change of
what is sent (a bool taken as a budget, a NaN score ranked first, a NaN temperature run greedy)."""

import pytest
from langchain_core.documents import Document
from pydantic import ValidationError

from gmsa.errors import ConfigError
from gmsa_integrations.langchain import ChatGMSA, GMSACompressor


@pytest.mark.parametrize("fields", [{"budget": True}, {"top_n": True}, {"rate": 2.0}, {"score_threshold": float("nan")},
                                    {"temperature": float("nan")}])
def test_fields_are_not_coerced_into_other_meanings(tiny_checkpoint, fields):
    kind = ChatGMSA if "temperature" in fields else GMSACompressor
    with pytest.raises(ValidationError):
        kind(checkpoint=str(tiny_checkpoint), device="cpu", **fields)


def test_retriever_scores_must_be_finite_numbers(tiny_checkpoint):
    compressor = GMSACompressor(checkpoint=str(tiny_checkpoint), device="cpu", relevance="retriever", budget=0.5)
    for score in (float("nan"), "high"):
        documents = [Document("Paris is in France.", metadata={"relevance_score": score}),
                     Document("Berlin is in Germany.", metadata={"relevance_score": 0.5})]
        with pytest.raises(ConfigError, match="needs a finite number as the score"):
            compressor.compress_documents(documents, "Where is Paris?")


@pytest.mark.parametrize("temperature", [float("nan"), -1.0])
def test_a_call_time_temperature_is_checked_as_the_constructor_checks_it(tiny_checkpoint, temperature):
    llm = ChatGMSA(checkpoint=str(tiny_checkpoint), device="cpu", max_tokens=2)
    with pytest.raises(ConfigError, match="temperature=.* is invalid"):
        llm.invoke("hi", temperature=temperature)


def test_used_compressors_and_chat_models_pickle_and_work_after(tiny_checkpoint, tmp_path):
    import pickle

    from gmsa_integrations.cache import SoftTokenCache
    from gmsa_integrations.llama_index import GMSALLM

    documents = [Document("Paris is the capital of France.")]
    compressor = GMSACompressor(checkpoint=str(tiny_checkpoint), device="cpu", rate=2,
                                soft_token_cache=SoftTokenCache(directory=tmp_path / "cache"))
    sent = compressor.compress_documents(documents, "Where is Paris?")
    copy = pickle.loads(pickle.dumps(compressor))  # its runtime (a lock, a model) is rebuilt on first use
    assert copy.compress_documents(documents, "Where is Paris?")[0].page_content == sent[0].page_content
    assert copy.soft_token_cache.directory == tmp_path / "cache"
    for llm, call in [(ChatGMSA(checkpoint=str(tiny_checkpoint), device="cpu", max_tokens=3),
                       lambda m: m.invoke("hi").content),
                      (GMSALLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=3),
                       lambda m: m.complete("hi").text)]:
        reply = call(llm)
        assert call(pickle.loads(pickle.dumps(llm))) == reply
