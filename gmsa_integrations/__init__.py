"""GMSA in LangChain and LlamaIndex pipelines.

- `gmsa_integrations.langchain`: GMSACompressor (a document compressor), ChatGMSA (a chat model)
- `gmsa_integrations.llama_index`: GMSANodePostprocessor, GMSALLM, GMSASynthesizer, gmsa_query_engine

Both frameworks are optional extras (`pip install 'gmsa[langchain]'`, `'gmsa[llama-index]'`);
they share one soft-token cache (`gmsa_integrations.cache`) and one loaded model per checkpoint.
"""

from gmsa_integrations.cache import SoftTokenCache, default_cache
from gmsa_integrations.markup import mark_document, split_marked, unmark

__all__ = ["SoftTokenCache", "default_cache", "mark_document", "split_marked", "unmark"]
