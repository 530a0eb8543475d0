"""GMSA over a tiny random Llama: generation, streaming, prompt layout."""

import torch
from tiny_gmsa import TEXTS

from gmsa.decode.prompt import embed_parts, question_message, render_chat, render_parts
from gmsa.training.objective import compress_contexts, decoder_batch
from gmsa.training.samples import qa_samples


def test_batched_generation_equals_one_by_one(model):
    soft = model.compress(TEXTS, rate=2)
    prompts = ["Question: who wrote the book?", "Answer the question.", "Restate the aforementioned Text."]
    contexts = [[soft[0]], [soft[1], "plain text context"], [soft[2], soft[1]]]
    together = model.generate(prompts, contexts, max_new_tokens=8, repetition_penalty=1.0)
    alone = [model.generate([p], [c], max_new_tokens=8, repetition_penalty=1.0)[0] for p, c in zip(prompts, contexts)]
    assert together == alone


def test_stream_yields_the_generated_text(model):
    soft = model.compress(TEXTS[:1], rate=4)
    full = model.generate(["Question: who?"], [soft], max_new_tokens=8)[0]
    assert "".join(model.stream("Question: who?", soft, max_new_tokens=8)).strip() == full


def test_crafted_marker_in_prompt_stays_text(model):
    soft = model.compress(TEXTS[:2], rate=4)
    crafted = "<gmsa-context-0> what? <gmsa-context-1>"
    parts = render_parts(model.tokenizer, model.config.prompt, [soft[0]], crafted)
    soft_parts = [p for p in parts if p.is_floating_point()]
    assert len(soft_parts) == 1 and soft_parts[0] is soft[0]
    text = model.tokenizer.decode(torch.cat([p for p in parts if not p.is_floating_point()]))
    assert crafted in text


def test_chat_places_soft_tokens_where_they_appear(model):
    soft = model.compress(TEXTS[:2], rate=4)
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": ["Read: ", soft[1], " then ", soft[0], "\nWhat?"]}]
    parts = render_chat(model.tokenizer, model.config.prompt, conversation)
    soft_parts = [p for p in parts if p.is_floating_point()]
    assert [p is s for p, s in zip(soft_parts, (soft[1], soft[0]))] == [True, True]
    text = model.tokenizer.decode(torch.cat([p for p in parts if not p.is_floating_point()]))
    assert "Be brief." in text and "Read: " in text and "then" in text
    # The question helper is the same conversation the engine trains on.
    assert model.generate(["What?"], [soft], max_new_tokens=6) == model.generate_chat(
        [[question_message(model.config.prompt, soft, "What?")]], max_new_tokens=6)


def test_answering_and_training_lay_out_a_question_alike(model, corpus):
    # the decoder must read at inference what KEFT trained it on: the documents in order, then the question
    fmt = model.config.prompt
    soft = model.compress(TEXTS[:2], rate=4)
    expected = [[question_message(fmt, soft, model.format_question("who?"))]]
    seen = []  # what answer() hands the decoder (the tiny model's answers may be empty text)
    generate_chat = model.generate_chat
    model.generate_chat = lambda conversations, *args, **kwargs: seen.extend(conversations) or generate_chat(
        conversations, *args, **kwargs)
    answer = model.answer("who?", TEXTS[:2], rate=4, max_new_tokens=6)
    torch.testing.assert_close(model.decoder_inputs(seen)[0], model.decoder_inputs(expected)[0])
    assert answer.text == generate_chat(expected, max_new_tokens=6)[0]

    tokenizer = model.tokenizer
    sample = qa_samples([str(corpus[1])], tokenizer, model.config, max_documents=2, max_answer_tokens=8)[0]
    contexts = compress_contexts(model, [sample], [4])
    batch = decoder_batch(model, [sample], contexts)
    rendered = render_parts(tokenizer, fmt, contexts[0], sample.instruction)
    assert rendered[1] is contexts[0][0] and "What is in text 0?" in tokenizer.decode(rendered[-1])
    embedding = model.base.get_input_embeddings()
    expected_embeds = torch.cat([embed_parts(embedding, rendered), embedding(torch.tensor(sample.target))])
    torch.testing.assert_close(batch.embeds[0], expected_embeds)


def test_decoder_inputs_are_left_padded_whole(model):
    conversations = model.question_conversations(["short", "a much longer prompt than the other"], None)
    embeds, mask, positions = model.decoder_inputs(conversations)
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert positions[0, mask[0].argmax()] == 0 and positions[1, -1] == mask.shape[1] - 1
