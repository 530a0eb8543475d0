"""langchain-tests' standard integration suite for ChatGMSA on the real default model (CPU)."""

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from gmsa_integrations.langchain import ChatGMSA

pytestmark = pytest.mark.integration


class TestChatGMSAIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self):
        return ChatGMSA

    @property
    def chat_model_params(self) -> dict:
        return {"device": "cpu"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # SmolLM2-135M under GMSA has no tool-calling training; tool tests are skipped

    @property
    def has_structured_output(self) -> bool:
        return True  # decoded under the schema (gmsa.decode.structured)

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False  # a text-only model

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one loaded checkpoint per instance; pick another with checkpoint=...
